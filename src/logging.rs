//! The process logger: env_logger behind two guards, so no log level ever prints a credential.
//!
//! 1. **Header- and body-printing targets are capped at `info`.** Pingora's HTTP code logs whole
//!    request and response headers (the upstream's `Authorization`, the client's key) and bodies at
//!    `debug`/`trace`; those records are dropped whatever `RUST_LOG` says ([`QUIET_TARGETS`]). The
//!    gateway's own `--debug` line for an upstream request masks credentials itself.
//! 2. **Every configured credential is masked in every line.** The config's secrets
//!    ([`crate::config::Config::secrets`]: upstream auth in each wire form, secret header-op values,
//!    proxy and database passwords, the master key and admin token), set at start and on every reload
//!    ([`set_secrets`]), and credentials learnt at run time (short-lived cloud tokens,
//!    [`add_secret`]), are replaced by `***` in each formatted line before it is written. A line
//!    is formatted once to check it; records without any secret are passed on unchanged.
//!
//! The logger is process-wide by nature (the `log` facade); the secret list is the one global it
//! keeps, swapped atomically.

use arc_swap::ArcSwap;
use std::sync::{Arc, LazyLock};

/// Shorter values are not treated as secrets (they would mask ordinary words).
pub const MIN_SECRET_LEN: usize = 4;

/// At most this many run-time secrets are remembered (oldest dropped first).
const MAX_RUNTIME_SECRETS: usize = 64;

/// Targets whose `debug`/`trace` records print HTTP headers or bodies (Pingora's HTTP/1 and HTTP/2
/// client and server, its proxy loop, and the HTTP libraries of the background clients).
pub const QUIET_TARGETS: &[&str] = &[
    "pingora_core::protocols::http",
    "pingora_core::apps::http_app",
    "pingora_proxy",
    "pingora_cache",
    "h2",
    "hyper",
    "hyper_util",
    "reqwest",
    "tokio_postgres",
    "redis",
    // Token grants: the signed assertion and the access token.
    "yup_oauth2",
];

#[derive(Default)]
struct Secrets {
    config: Vec<String>,
    runtime: Vec<String>,
}

static SECRETS: LazyLock<ArcSwap<Secrets>> =
    LazyLock::new(|| ArcSwap::from_pointee(Secrets::default()));

/// Replace the configured secrets (at start and after each reload).
pub fn set_secrets(values: Vec<String>) {
    let cur = SECRETS.load();
    SECRETS.store(Arc::new(Secrets {
        config: values,
        runtime: cur.runtime.clone(),
    }));
}

/// Remember a credential obtained at run time (an OAuth access token, a session token).
pub fn add_secret(value: &str) {
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    let cur = SECRETS.load();
    if cur.runtime.iter().any(|s| s == value) {
        return;
    }
    let mut runtime = cur.runtime.clone();
    if runtime.len() >= MAX_RUNTIME_SECRETS {
        runtime.remove(0);
    }
    runtime.push(value.to_string());
    SECRETS.store(Arc::new(Secrets {
        config: cur.config.clone(),
        runtime,
    }));
}

/// `line` with every known secret replaced by `***`; `None` when it holds none.
pub fn scrub(line: &str) -> Option<String> {
    let secrets = SECRETS.load();
    let mut out: Option<String> = None;
    for s in secrets.config.iter().chain(secrets.runtime.iter()) {
        let cur = out.as_deref().unwrap_or(line);
        if cur.contains(s.as_str()) {
            out = Some(cur.replace(s.as_str(), "***"));
        }
    }
    out
}

fn quiet(target: &str) -> bool {
    QUIET_TARGETS.iter().any(|t| {
        target
            .strip_prefix(t)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

struct Guarded {
    inner: env_logger::Logger,
}

impl log::Log for Guarded {
    fn enabled(&self, meta: &log::Metadata<'_>) -> bool {
        if meta.level() > log::Level::Info && quiet(meta.target()) {
            return false;
        }
        self.inner.enabled(meta)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = match record.args().as_str() {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => std::borrow::Cow::Owned(record.args().to_string()),
        };
        match scrub(&line) {
            None => self.inner.log(record),
            Some(clean) => self.inner.log(
                &log::Record::builder()
                    .args(format_args!("{clean}"))
                    .metadata(record.metadata().clone())
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .build(),
            ),
        }
    }

    fn flush(&self) {
        self.inner.flush()
    }
}

/// Install the process logger: `level` (raised to `debug` by `--debug` and `--detailed_debug`),
/// `RUST_LOG` on top. The upstream requests as `curl` commands ([`crate::curl`]) carry prompts:
/// they are logged only with `--detailed_debug`.
pub fn init(level: log::LevelFilter, debug: bool, detailed: bool) {
    let level = if debug || detailed {
        log::LevelFilter::Debug
    } else {
        level
    };
    let mut b = env_logger::Builder::new();
    b.filter_level(level);
    b.filter_module(
        crate::curl::TARGET,
        if detailed {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Off
        },
    );
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    let inner = b.build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Guarded { inner })).is_ok() {
        log::set_max_level(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_targets_match_by_module() {
        assert!(quiet("pingora_proxy::proxy_h1"));
        assert!(quiet("pingora_core::protocols::http::v1::client"));
        assert!(quiet("h2"));
        assert!(!quiet("h2x"));
        assert!(!quiet("pingora_core::server"));
        assert!(!quiet("llmproxy::proxy"));
    }

    #[test]
    fn scrubs_known_secrets() {
        set_secrets(vec!["sk-secret-1234".into(), "hunter22".into()]);
        add_secret("ya29.token-abc");
        assert_eq!(
            scrub("auth: Bearer sk-secret-1234, pw hunter22, t ya29.token-abc").as_deref(),
            Some("auth: Bearer ***, pw ***, t ***")
        );
        assert_eq!(scrub("nothing here"), None);
        add_secret("abc");
        assert_eq!(scrub("abc"), None, "too short to be a secret");
    }
}
