//! Google OAuth2 access tokens for `auth: {type: gcp}` (Vertex AI), cached and refreshed before
//! they expire.
//!
//! Where tokens come from, in order: the upstream's `credentials_file` (a service-account key),
//! else the key file named by `GOOGLE_APPLICATION_CREDENTIALS`, else the metadata server of the
//! machine (GCE, GKE, Cloud Run: `http://metadata.google.internal`, or `GCE_METADATA_HOST`). The
//! grant itself (a JWT signed with the account's key, posted to the key file's `token_uri`, or the
//! metadata server's token path) is `yup-oauth2`'s; this module decides when to ask.
//!
//! **When.** One token serves every request until it nears its end: a request arriving in the
//! last fifth of the token's life (at most the last 5 minutes) is signed with the current token
//! and starts one background refresh; only a request that finds no usable token (the first one,
//! or after a long idle spell) waits, for a refresh that every concurrent request shares (one grant
//! in flight, never one per request). A failed refresh keeps the current token while it lasts and
//! is not retried for a second, so a broken token endpoint is not hammered. Each token obtained is
//! registered with the logger's secrets ([`crate::logging::add_secret`]).

use pingora::http::RequestHeader;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use yup_oauth2::authenticator::DefaultAuthenticator;

use super::signer::SignError;

/// The scope Vertex AI (and every Google Cloud API) accepts.
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// How long a token lives when the grant does not say.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// The longest head start a refresh takes before expiry.
const MAX_MARGIN: Duration = Duration::from_secs(300);
/// A failed refresh is not retried sooner than this.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// A grant that takes longer has failed.
const GRANT_TIMEOUT: Duration = Duration::from_secs(30);

/// One token and when to renew it.
#[derive(Clone)]
struct Cached {
    /// `Bearer <token>`.
    header: http::HeaderValue,
    /// From here on the token is renewed in the background.
    refresh_at: Instant,
    /// From here on it is not sent any more (it could expire in flight).
    usable_until: Instant,
}

/// Where the grants come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A service-account key file (the config's, or `GOOGLE_APPLICATION_CREDENTIALS`).
    KeyFile(PathBuf),
    /// The metadata server's `instance/service-accounts/default/token` at this URL.
    Metadata(String),
}

impl Source {
    /// The config's file, else the environment's, else the metadata server.
    pub fn resolve(credentials_file: Option<&PathBuf>) -> Source {
        if let Some(f) = credentials_file {
            return Source::KeyFile(f.clone());
        }
        if let Some(f) =
            std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").filter(|f| !f.is_empty())
        {
            return Source::KeyFile(PathBuf::from(f));
        }
        let host = std::env::var("GCE_METADATA_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "metadata.google.internal".to_string());
        Source::Metadata(format!(
            "http://{host}/computeMetadata/v1/instance/service-accounts/default/token"
        ))
    }
}

/// One upstream's tokens.
pub struct TokenSource {
    source: Source,
    upstream: String,
    cached: Mutex<Option<Cached>>,
    /// The authenticator, built on first use; the lock is also the single-flight guard.
    grant: tokio::sync::Mutex<Option<DefaultAuthenticator>>,
    refreshing: AtomicBool,
    last_failure: Mutex<Option<(Instant, String)>>,
}

impl TokenSource {
    pub fn new(upstream: &str, credentials_file: Option<&PathBuf>) -> Arc<TokenSource> {
        Arc::new(TokenSource {
            source: Source::resolve(credentials_file),
            upstream: upstream.to_string(),
            cached: Mutex::new(None),
            grant: tokio::sync::Mutex::new(None),
            refreshing: AtomicBool::new(false),
            last_failure: Mutex::new(None),
        })
    }

    fn current(&self) -> Option<Cached> {
        self.cached.lock().ok().and_then(|c| c.clone())
    }

    /// Set `Authorization: Bearer <token>` on `req`.
    pub async fn sign(self: &Arc<Self>, req: &mut RequestHeader) -> Result<(), SignError> {
        let now = Instant::now();
        let header = match self.current() {
            Some(c) if now < c.refresh_at => c.header,
            Some(c) if now < c.usable_until => {
                self.refresh_in_background();
                c.header
            }
            _ => self.refresh_now().await?,
        };
        req.insert_header(http::header::AUTHORIZATION, header)
            .map_err(|e| SignError(format!("setting the access token: {e}")))
    }

    fn refresh_in_background(self: &Arc<Self>) {
        if self.failed_recently().is_some() || self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let _ = me.refresh_now().await;
            me.refreshing.store(false, Ordering::Release);
        });
    }

    fn failed_recently(&self) -> Option<String> {
        let f = self.last_failure.lock().ok()?;
        f.as_ref()
            .filter(|(at, _)| at.elapsed() < RETRY_AFTER_FAILURE)
            .map(|(_, e)| e.clone())
    }

    /// A fresh token, or the one a concurrent refresh just obtained.
    async fn refresh_now(&self) -> Result<http::HeaderValue, SignError> {
        let mut grant = self.grant.lock().await;
        // Someone else refreshed while this one waited.
        if let Some(c) = self.current().filter(|c| Instant::now() < c.refresh_at) {
            return Ok(c.header);
        }
        let usable = || self.current().filter(|c| Instant::now() < c.usable_until);
        if let Some(e) = self.failed_recently() {
            return usable().map(|c| c.header).ok_or(SignError(e));
        }
        let outcome = match tokio::time::timeout(GRANT_TIMEOUT, self.fetch(&mut grant)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no token within {}s", GRANT_TIMEOUT.as_secs())),
        };
        match outcome {
            Ok(c) => {
                let header = c.header.clone();
                if let Ok(mut slot) = self.cached.lock() {
                    *slot = Some(c);
                }
                if let Ok(mut f) = self.last_failure.lock() {
                    *f = None;
                }
                Ok(header)
            }
            Err(e) => {
                let msg = format!("Google access token for upstream `{}`: {e}", self.upstream);
                log::warn!("{msg}");
                if let Ok(mut f) = self.last_failure.lock() {
                    *f = Some((Instant::now(), msg.clone()));
                }
                usable().map(|c| c.header).ok_or(SignError(msg))
            }
        }
    }

    /// One grant.
    async fn fetch(&self, grant: &mut Option<DefaultAuthenticator>) -> Result<Cached, String> {
        if grant.is_none() {
            *grant = Some(build(&self.source).await?);
        }
        let auth = grant.as_ref().ok_or("no authenticator")?;
        let t = auth
            .force_refreshed_token(&[CLOUD_PLATFORM])
            .await
            .map_err(|e| e.to_string())?;
        let token = t
            .token()
            .filter(|t| !t.is_empty())
            .ok_or("the grant carried no access token")?;
        crate::logging::add_secret(token);
        let lifetime = t
            .expiration_time()
            .map(|exp| {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                Duration::from_secs(u64::try_from(exp.unix_timestamp() - now).unwrap_or(0))
            })
            .unwrap_or(DEFAULT_LIFETIME);
        let header = http::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the access token is not a valid header value".to_string())?;
        let now = Instant::now();
        let margin = (lifetime / 5).min(MAX_MARGIN);
        Ok(Cached {
            header,
            refresh_at: now + lifetime.saturating_sub(margin),
            usable_until: now + lifetime.saturating_sub(margin / 4),
        })
    }
}

/// The authenticator for a source.
async fn build(source: &Source) -> Result<DefaultAuthenticator, String> {
    match source {
        Source::KeyFile(path) => {
            let key = yup_oauth2::read_service_account_key(path)
                .await
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            yup_oauth2::ServiceAccountAuthenticator::builder(key)
                .build()
                .await
                .map_err(|e| e.to_string())
        }
        Source::Metadata(url) => {
            let opts = yup_oauth2::ApplicationDefaultCredentialsFlowOpts {
                metadata_url: Some(url.clone()),
            };
            use yup_oauth2::authenticator::ApplicationDefaultCredentialsTypes as T;
            match yup_oauth2::ApplicationDefaultCredentialsAuthenticator::builder(opts).await {
                T::InstanceMetadata(b) => b.build().await.map_err(|e| e.to_string()),
                // Only when the variable is set but empty (a set one is a `KeyFile` source).
                T::ServiceAccount(_) => {
                    Err("GOOGLE_APPLICATION_CREDENTIALS is set but empty".to_string())
                }
            }
        }
    }
}
