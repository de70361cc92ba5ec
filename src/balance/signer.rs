//! Credentials that change from request to request: a signature over the final request (AWS
//! SigV4), or a short-lived access token fetched and refreshed in the background (Google OAuth2).
//!
//! A static credential (`auth: {type: bearer | basic | header}`) is a fixed header, applied with the
//! upstream's other headers (`upstream::apply_upstream_headers`). A [`Signer`] runs after those,
//! on the request as it will be sent — every model request, passthrough request and health probe —
//! so a signature covers the final headers and body.

use pingora::http::RequestHeader;

/// Why a request could not be signed or authorised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignError(pub String);

impl std::fmt::Display for SignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One upstream's per-request credentials.
pub enum Signer {
    /// Nothing beyond the static headers.
    Static,
    /// A Google OAuth2 access token (`auth: {type: gcp}`), cached and refreshed.
    Google(std::sync::Arc<super::gcp::TokenSource>),
    /// AWS Signature Version 4 (`auth: {type: aws_sigv4}`).
    SigV4(Box<super::sigv4::SigV4>),
}

impl Signer {
    /// The signer an upstream's `auth` needs.
    pub fn for_upstream(cfg: &crate::config::Upstream) -> Signer {
        match &cfg.auth {
            crate::config::Auth::Gcp { credentials_file } => Signer::Google(
                super::gcp::TokenSource::new(&cfg.name, credentials_file.as_ref()),
            ),
            crate::config::Auth::AwsSigV4(a) => {
                Signer::SigV4(Box::new(super::sigv4::SigV4::new(a, "bedrock", &cfg.name)))
            }
            _ => Signer::Static,
        }
    }

    /// Sign or authorise `req`, whose headers are final. `body`: the exact bytes that will be sent
    /// (`None`: a body streamed from the client, which a signature cannot cover).
    pub async fn sign(
        &self,
        req: &mut RequestHeader,
        body: Option<&[u8]>,
    ) -> Result<(), SignError> {
        // The token and SigV4 futures are boxed: inline, their ~2.3 and ~5.6 KB would be part of
        // every request's future (static keys too), copied into its box on each request.
        match (self, body) {
            (Signer::Static, _) => Ok(()),
            (Signer::Google(t), _) => Box::pin(t.sign(req)).await,
            (Signer::SigV4(s), Some(body)) => Box::pin(s.sign(req, body)).await,
            (Signer::SigV4(_), None) => Err(SignError(
                "a SigV4 signature must cover the body, and a streamed body cannot be covered"
                    .into(),
            )),
        }
    }

    /// Whether requests with a body the gateway does not hold (passthrough) can be signed.
    pub fn signs_streamed_bodies(&self) -> bool {
        match self {
            Signer::Static | Signer::Google(_) => true,
            Signer::SigV4(_) => false,
        }
    }
}
