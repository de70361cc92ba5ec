//! AWS Signature Version 4 for `auth: {type: aws_sigv4}` upstreams (Bedrock, signing name
//! `bedrock`): the signature itself is `aws-sigv4`'s, the credentials static keys from the config or
//! the standard AWS credential chain of `aws-config` (environment, shared config/credentials files
//! and `profile`, web identity / IRSA, ECS, EC2 instance metadata).
//!
//! **What is signed.** `host`, `content-type`, the `x-amz-*` headers and the exact body (its SHA-256
//! is in the canonical request); `x-amz-date` and, with temporary credentials,
//! `x-amz-security-token` are added. The other headers travel unsigned, so a proxy or load balancer
//! that adds or rewrites a header (`user-agent`, tracing headers) cannot break the signature. The
//! path is double-encoded in the canonical request, as every AWS service but S3 expects
//! (`/model/x%3A0/converse` is signed as `/model/x%253A0/converse`).
//!
//! **Credentials from the chain** are resolved on the first signature and cached: re-resolved when
//! less than [`REFRESH_BEFORE`] of their lifetime is left (by one request, while the others keep
//! signing with the still-valid ones), and every [`REREAD_AFTER`] when they carry no expiry (keys in
//! the environment or a file, which an operator may rotate). A failed refresh keeps the old
//! credentials while they are valid; without any, requests fail at once for [`RETRY_AFTER_FAILURE`]
//! rather than each waiting on the chain (instance metadata timeouts). Every secret access key and
//! session token loaded is registered with the log scrubber.

mod canonical;

use super::signer::SignError;
use crate::config::upstreams::AwsAuth;
use arc_swap::ArcSwapOption;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use pingora::http::RequestHeader;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Credentials with less than this left are refreshed.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);
/// Credentials without an expiry are read again after this long.
pub const REREAD_AFTER: Duration = Duration::from_secs(15 * 60);
/// After the chain found nothing, requests fail at once for this long.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// The longest wait for the chain (instance metadata, STS).
const CHAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The signer of one upstream.
pub struct SigV4 {
    region: String,
    service: &'static str,
    source: Source,
    /// The day's signing key (derived once a day, not per request).
    keys: canonical::KeyCache,
}

enum Source {
    Static(Identity),
    Chain(Chain),
}

/// The standard credential chain and its cache.
struct Chain {
    profile: Option<String>,
    region: String,
    upstream: String,
    provider: tokio::sync::OnceCell<SharedCredentialsProvider>,
    current: ArcSwapOption<Loaded>,
    refresh: tokio::sync::Mutex<Option<(Instant, String)>>,
}

/// Credentials the chain returned.
struct Loaded {
    identity: Identity,
    expires: Option<SystemTime>,
    loaded: Instant,
}

impl Loaded {
    fn valid(&self, now: SystemTime) -> bool {
        self.expires.is_none_or(|e| e > now)
    }

    fn fresh(&self, now: SystemTime) -> bool {
        match self.expires {
            Some(e) => e
                .duration_since(now)
                .is_ok_and(|left| left > REFRESH_BEFORE),
            None => self.loaded.elapsed() < REREAD_AFTER,
        }
    }
}

impl SigV4 {
    /// The signer for an upstream's `aws_sigv4` auth; `service` is the signing name.
    pub fn new(auth: &AwsAuth, service: &'static str, upstream: &str) -> SigV4 {
        let source = match &auth.keys {
            Some(k) => Source::Static(
                Credentials::new(
                    k.access_key_id.clone(),
                    k.secret_access_key.expose().to_string(),
                    k.session_token.as_ref().map(|t| t.expose().to_string()),
                    None,
                    "llmproxy-config",
                )
                .into(),
            ),
            None => Source::Chain(Chain {
                profile: auth.profile.clone(),
                region: auth.region.clone(),
                upstream: upstream.to_string(),
                provider: tokio::sync::OnceCell::new(),
                current: ArcSwapOption::empty(),
                refresh: tokio::sync::Mutex::new(None),
            }),
        };
        SigV4 {
            region: auth.region.clone(),
            service,
            source,
            keys: canonical::KeyCache::default(),
        }
    }

    /// Sign `req` (whose headers are final, `host` included) with `body`, the exact bytes sent.
    pub async fn sign(&self, req: &mut RequestHeader, body: &[u8]) -> Result<(), SignError> {
        let identity = match &self.source {
            Source::Static(i) => i.clone(),
            Source::Chain(c) => c.identity().await?,
        };
        self.sign_with(&identity, req, body, SystemTime::now())
    }

    fn sign_with(
        &self,
        identity: &Identity,
        req: &mut RequestHeader,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SignError> {
        // Signed again after a retry on a fresh connection: the old signature goes.
        for h in ["authorization", "x-amz-date", "x-amz-security-token"] {
            req.remove_header(h);
        }
        let mut signed: Vec<(&str, &str)> = Vec::with_capacity(4);
        for (name, value) in req.headers.iter() {
            let n = name.as_str();
            if n == "host" || n == "content-type" || n.starts_with("x-amz-") {
                if let Ok(v) = value.to_str() {
                    signed.push((n, v));
                }
            }
        }
        if !signed.iter().any(|(n, _)| *n == "host") {
            return Err(SignError("the request has no Host header to sign".into()));
        }
        let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
        // The usual request (no query, a plain path and header values): its canonical form written
        // directly; anything else through the crate's general signer.
        let fast = match (identity.data::<Credentials>(), req.uri.query()) {
            (Some(c), None) => canonical::sign(
                &self.keys,
                &canonical::Scope {
                    access_key_id: c.access_key_id(),
                    secret: c.secret_access_key(),
                    session_token: c.session_token(),
                    region: &self.region,
                    service: self.service,
                },
                &canonical::Request {
                    method: req.method.as_str(),
                    path: target,
                    headers: &signed,
                    body,
                },
                now,
            )
            .map(|s| (s, c.session_token().map(str::to_owned))),
            _ => None,
        };
        let add = |req: &mut RequestHeader, name: &'static str, value: String| {
            req.insert_header(name, value)
                .map_err(|e| SignError(format!("SigV4 header: {e}")))
        };
        match fast {
            Some((s, token)) => {
                add(req, "x-amz-date", s.date)?;
                add(req, "authorization", s.authorization)?;
                if let Some(t) = token {
                    add(req, "x-amz-security-token", t)?;
                }
            }
            None => {
                let out = self.general(identity, req.method.as_str(), target, signed, body, now)?;
                for (k, v) in out {
                    req.insert_header(k, v)
                        .map_err(|e| SignError(format!("SigV4 header: {e}")))?;
                }
            }
        }
        Ok(())
    }
}

impl SigV4 {
    /// `aws-sigv4`'s general signer: the headers to add.
    fn general(
        &self,
        identity: &Identity,
        method: &str,
        target: &str,
        signed: Vec<(&str, &str)>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Vec<(String, String)>, SignError> {
        let params = v4::SigningParams::builder()
            .identity(identity)
            .region(&self.region)
            .name(self.service)
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| SignError(format!("SigV4 parameters: {e}")))?
            .into();
        let signable = SignableRequest::new(
            method,
            target,
            signed.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| SignError(format!("SigV4: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| SignError(format!("SigV4: {e}")))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }
}

impl Chain {
    /// Cached credentials, refreshed before they expire.
    async fn identity(&self) -> Result<Identity, SignError> {
        let now = SystemTime::now();
        let current = self.current.load_full();
        if let Some(c) = current.as_ref().filter(|c| c.fresh(now)) {
            return Ok(c.identity.clone());
        }
        // Someone else is refreshing: use what is still valid meanwhile.
        let mut guard = match self.refresh.try_lock() {
            Ok(g) => g,
            Err(_) => match current.as_ref().filter(|c| c.valid(now)) {
                Some(c) => return Ok(c.identity.clone()),
                None => self.refresh.lock().await,
            },
        };
        // Refreshed while this request waited?
        let now = SystemTime::now();
        let current = self.current.load_full();
        if let Some(c) = current.as_ref().filter(|c| c.fresh(now)) {
            return Ok(c.identity.clone());
        }
        let still_valid = current.as_ref().filter(|c| c.valid(now));
        if let Some((at, why)) = guard.as_ref() {
            if at.elapsed() < RETRY_AFTER_FAILURE {
                return match still_valid {
                    Some(c) => Ok(c.identity.clone()),
                    None => Err(SignError(why.clone())),
                };
            }
        }
        match self.load().await {
            Ok(creds) => {
                crate::logging::add_secret(creds.secret_access_key());
                if let Some(t) = creds.session_token() {
                    crate::logging::add_secret(t);
                }
                let loaded = Arc::new(Loaded {
                    expires: creds.expiry(),
                    identity: creds.into(),
                    loaded: Instant::now(),
                });
                let identity = loaded.identity.clone();
                self.current.store(Some(loaded));
                *guard = None;
                Ok(identity)
            }
            Err(why) => {
                log::warn!("upstream {}: {why}", self.upstream);
                *guard = Some((Instant::now(), why.clone()));
                match still_valid {
                    Some(c) => Ok(c.identity.clone()),
                    None => Err(SignError(why)),
                }
            }
        }
    }

    async fn load(&self) -> Result<Credentials, String> {
        let provider = self
            .provider
            .get_or_init(|| async {
                let http = aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https();
                let conf =
                    aws_config::provider_config::ProviderConfig::default().with_http_client(http);
                let mut b =
                    aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                        .configure(conf)
                        .region(aws_config::Region::new(self.region.clone()));
                if let Some(p) = &self.profile {
                    b = b.profile_name(p);
                }
                SharedCredentialsProvider::new(b.build().await)
            })
            .await;
        match tokio::time::timeout(CHAIN_TIMEOUT, provider.provide_credentials()).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(format!(
                "no AWS credentials from the standard chain (environment, shared files{}, web identity, ECS, instance metadata): {}",
                self.profile
                    .as_deref()
                    .map(|p| format!(" profile `{p}`"))
                    .unwrap_or_default(),
                aws_smithy_types::error::display::DisplayErrorContext(&e)
            )),
            Err(_) => Err(format!(
                "the AWS credential chain did not answer within {CHAIN_TIMEOUT:?}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::secret::Secret;
    use crate::config::upstreams::AwsKeys;

    fn auth(token: Option<&str>) -> AwsAuth {
        AwsAuth {
            region: "us-east-1".into(),
            keys: Some(AwsKeys {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                session_token: token.map(Secret::new),
            }),
            profile: None,
        }
    }

    fn request() -> RequestHeader {
        let mut req = RequestHeader::build(
            "POST",
            b"/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
            None,
        )
        .unwrap();
        req.insert_header("host", "bedrock-runtime.us-east-1.amazonaws.com")
            .unwrap();
        req.insert_header("content-type", "application/json")
            .unwrap();
        req.insert_header("user-agent", "test").unwrap();
        req
    }

    #[test]
    fn signs_host_type_date_and_token() {
        let s = SigV4::new(&auth(Some("session-token-123")), "bedrock", "b");
        let Source::Static(id) = &s.source else {
            panic!("static keys")
        };
        let mut req = request();
        // 2015-08-30T12:36:00Z, AWS's documented example instant.
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        s.sign_with(id, &mut req, b"{}", t).unwrap();
        let h = |req: &RequestHeader, n: &str| {
            req.headers.get(n).unwrap().to_str().unwrap().to_string()
        };
        let a = h(&req, "authorization");
        assert!(
            a.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
            ),
            "{a}"
        );
        assert_eq!(h(&req, "x-amz-date"), "20150830T123600Z");
        assert_eq!(h(&req, "x-amz-security-token"), "session-token-123");
        // Signing again (a retry) replaces the signature instead of adding one.
        s.sign_with(id, &mut req, b"{}", t).unwrap();
        assert_eq!(req.headers.get_all("authorization").iter().count(), 1);
        assert_eq!(h(&req, "authorization"), a);
        // Without a session token there is none to send.
        let s = SigV4::new(&auth(None), "bedrock", "b");
        let Source::Static(id) = &s.source else {
            panic!("static keys")
        };
        let mut req = request();
        s.sign_with(id, &mut req, b"{}", t).unwrap();
        assert!(req.headers.get("x-amz-security-token").is_none());
        assert!(h_of(&req).contains("SignedHeaders=content-type;host;x-amz-date,"));
    }

    fn h_of(req: &RequestHeader) -> String {
        req.headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    }

    /// The canonical form written directly gives the crate's signature byte for byte, on generated
    /// requests of every shape (those it does not take go to the crate, and must still sign).
    #[test]
    fn the_direct_canonical_form_signs_as_the_crate_does() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(20_261_203);
        let s = SigV4::new(&auth(None), "bedrock", "b");
        let pick = |rng: &mut StdRng, from: &[&'static str]| from[rng.gen_range(0..from.len())];
        let segs = [
            "model",
            "anthropic.claude-3-haiku-20240307-v1%3A0",
            "converse",
            "converse-stream",
            "a~b_c-d",
            "%2F",
            "x%20y",
            ".",
            "..",
            "",
            "invoke",
            "amazon.titan-embed-text-v2%3A0",
            "Z9",
            "a:b",
            "caf%C3%A9",
        ];
        let values = [
            "application/json",
            "bedrock-runtime.us-east-1.amazonaws.com",
            "127.0.0.1:8080",
            " padded",
            "trailing ",
            "two  spaces",
            "a b c",
            "x",
            "guardrail-1",
            "",
        ];
        let secrets = [
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "other-secret",
            "s3",
        ];
        let tokens = [
            None,
            Some("session-token-123"),
            Some("tok en"),
            Some(" lead"),
        ];
        let (mut direct, mut total) = (0, 0);
        for _ in 0..3000 {
            let n = rng.gen_range(0..5);
            let mut path = String::new();
            for _ in 0..n {
                path.push('/');
                path.push_str(pick(&mut rng, &segs));
            }
            if path.is_empty() || rng.gen_bool(0.1) {
                path.push('/');
            }
            let method = pick(&mut rng, &["POST", "GET"]);
            let Ok(mut req) = RequestHeader::build(method, path.as_bytes(), None) else {
                continue;
            };
            let mut names = vec!["host", "content-type"];
            for extra in ["x-amz-bedrock-trace", "x-amz-foo", "user-agent"] {
                if rng.gen_bool(0.3) {
                    names.push(extra);
                }
            }
            for name in names {
                let v = pick(&mut rng, &values);
                if name == "host" && v.is_empty() {
                    continue;
                }
                let _ = req.append_header(name, v);
                if name.starts_with("x-amz") && rng.gen_bool(0.1) {
                    let _ = req.append_header(name, "again");
                }
            }
            let body: Vec<u8> = (0..rng.gen_range(0..300)).map(|_| rng.gen()).collect();
            // Same days again and again (the cached key) and any day of five centuries.
            let secs = if rng.gen_bool(0.5) {
                1_764_720_000 + rng.gen_range(0..3 * 86_400)
            } else {
                rng.gen_range(0..16_000_000_000_u64)
            };
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            let identity: Identity = Credentials::new(
                "AKIDEXAMPLE",
                pick(&mut rng, &secrets),
                tokens[rng.gen_range(0..tokens.len())].map(str::to_owned),
                None,
                "t",
            )
            .into();
            let mut signed_req = req.clone();
            let ours = s.sign_with(&identity, &mut signed_req, &body, now);
            // The crate's, from the same headers.
            let headers: Vec<(&str, &str)> = req
                .headers
                .iter()
                .filter(|(n, _)| {
                    let n = n.as_str();
                    n == "host" || n == "content-type" || n.starts_with("x-amz-")
                })
                .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
                .collect();
            if !headers.iter().any(|(n, _)| *n == "host") {
                assert!(ours.is_err());
                continue;
            }
            let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
            let theirs = s.general(&identity, method, target, headers.clone(), &body, now);
            let Ok(theirs) = theirs else {
                assert!(
                    ours.is_err(),
                    "{method} {target}: the crate refused, we signed"
                );
                continue;
            };
            total += 1;
            let c = identity.data::<Credentials>().unwrap();
            let took_direct = canonical::sign(
                &canonical::KeyCache::default(),
                &canonical::Scope {
                    access_key_id: c.access_key_id(),
                    secret: c.secret_access_key(),
                    session_token: c.session_token(),
                    region: "us-east-1",
                    service: "bedrock",
                },
                &canonical::Request {
                    method,
                    path: target,
                    headers: &headers,
                    body: &body,
                },
                now,
            )
            .is_some();
            direct += usize::from(took_direct);
            ours.unwrap();
            for (name, value) in &theirs {
                let got = signed_req
                    .headers
                    .get(name.as_str())
                    .map(|v| v.to_str().unwrap());
                assert_eq!(
                    got,
                    Some(value.as_str()),
                    "{name} of {method} {target} {headers:?} at {secs}"
                );
            }
            assert_eq!(
                signed_req.headers.len(),
                req.headers.len() + theirs.len(),
                "{method} {target}: the same headers added"
            );
        }
        // Both paths were exercised (most generated shapes are odd ones, for the crate).
        assert!(
            total > 1500 && direct > total / 10 && direct < total,
            "{direct} of {total}"
        );
        // Bedrock's own requests take the direct path.
        for token in [None, Some("session-token-123")] {
            let req = request();
            let headers: Vec<(&str, &str)> = vec![
                ("host", "bedrock-runtime.us-east-1.amazonaws.com"),
                ("content-type", "application/json"),
            ];
            let scope = canonical::Scope {
                access_key_id: "AKIDEXAMPLE",
                secret: "s",
                session_token: token,
                region: "us-east-1",
                service: "bedrock",
            };
            let path = req.uri.path();
            let r = canonical::Request {
                method: "POST",
                path,
                headers: &headers,
                body: b"{}",
            };
            assert!(canonical::sign(
                &canonical::KeyCache::default(),
                &scope,
                &r,
                SystemTime::now()
            )
            .is_some());
        }
    }

    #[test]
    fn freshness() {
        let now = SystemTime::now();
        let id: Identity = Credentials::new("a", "b", None, None, "t").into();
        let l = |expires| Loaded {
            identity: id.clone(),
            expires,
            loaded: Instant::now(),
        };
        assert!(l(None).fresh(now));
        assert!(l(Some(now + Duration::from_secs(3600))).fresh(now));
        let soon = l(Some(now + Duration::from_secs(60)));
        assert!(!soon.fresh(now) && soon.valid(now));
        let gone = l(Some(now - Duration::from_secs(1)));
        assert!(!gone.fresh(now) && !gone.valid(now));
    }
}
