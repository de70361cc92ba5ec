//! Config reload: `SIGHUP` or `POST /reload` on the admin listener.
//!
//! The file is read and fully validated first; an invalid config is reported (every error, logged and
//! returned) and the running one keeps serving. A valid one becomes a new [`State`] swapped in
//! atomically: requests and streams in flight finish on the snapshot they started with. Upstreams whose
//! settings did not change keep their pools (health, addresses), and unchanged deployments keep their
//! cooldown and in-flight counts. TLS listeners re-read their certificate and key files (a changed
//! path or changed contents) and present them on new handshakes; open connections are untouched.
//! Listener addresses, thread counts, `server.proxy_protocol` and turning TLS on or off for a
//! listener need a restart or a graceful upgrade (`SIGQUIT` + `llmproxy -u`); a reload that changes
//! them says so in the log.

use crate::balance::UpstreamPool;
use crate::config::{self, Config, ConfigErrors};
use crate::keys::audit::{changed_paths, Actor, AuditEntry};
use crate::listener::tls::CertStore;
use crate::state::{Shared, State};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Where the config comes from, to read it again on reload, and the command-line settings laid
/// over it each time.
#[derive(Debug, Clone)]
pub struct Source {
    pub origin: Origin,
    pub overrides: config::Overrides,
}

#[derive(Debug, Clone)]
pub enum Origin {
    /// A config file, native or LiteLLM format.
    File(PathBuf),
    /// The embedded `conf/llmproxy.yaml` (environment variables are read again).
    Embedded,
    /// `--model provider/id [--api_base URL]`: nothing to re-read but the environment.
    QuickStart(config::QuickStart),
}

impl Source {
    pub fn load(&self) -> Result<Config, ConfigErrors> {
        let env = &config::ProcessEnv;
        match &self.origin {
            Origin::File(p) => config::load_with(p, &self.overrides, env),
            Origin::Embedded => {
                let doc = serde_yaml::from_str(config::DEFAULT_CONFIG).map_err(|e| {
                    let mut errs = ConfigErrors::default();
                    errs.push("", format!("the embedded config: {e}"));
                    errs
                })?;
                config::from_value(&doc, env, &self.overrides).config
            }
            Origin::QuickStart(qs) => config::quick_start(qs, env, &self.overrides),
        }
    }
}

pub struct Reloader {
    source: Source,
    shared: Arc<Shared>,
    pools: watch::Sender<Vec<Arc<UpstreamPool>>>,
    /// One reload at a time.
    lock: tokio::sync::Mutex<()>,
    /// The certificate of each TLS listener, by listen address.
    certificates: Vec<(SocketAddr, Arc<CertStore>)>,
}

impl Reloader {
    pub fn new(
        source: Source,
        shared: Arc<Shared>,
        pools: watch::Sender<Vec<Arc<UpstreamPool>>>,
    ) -> Reloader {
        Reloader {
            source,
            shared,
            pools,
            lock: tokio::sync::Mutex::new(()),
            certificates: Vec::new(),
        }
    }

    /// The TLS listeners' certificates, re-read on each reload.
    pub fn with_certificates(mut self, certificates: Vec<(SocketAddr, Arc<CertStore>)>) -> Self {
        self.certificates = certificates;
        self
    }

    /// Reload; on success returns a one-line summary, on failure every error (the old config stays).
    /// The attempt is recorded in the audit log (with the keys database: `server.master_key` set)
    /// as done by `actor`, with the paths of the settings that changed, never their values.
    pub async fn reload(&self, actor: Actor) -> Result<String, ConfigErrors> {
        let _one_at_a_time = self.lock.lock().await;
        let m = &self.shared.metrics;
        let result = self.try_reload().await;
        let mut entry;
        match &result {
            Ok((summary, (paths, total))) => {
                m.config_reloads.with_label_values(&["ok"]).inc();
                log::info!("config reloaded: {summary}");
                for w in &self.shared.state.load().config.warnings.0 {
                    log::warn!("config: {w}");
                }
                entry = AuditEntry::new(actor, "reloaded", "config", None);
                entry.updated_values = serde_json::json!({
                    "result": "ok", "summary": summary, "changed": paths, "changed_count": total,
                });
            }
            Err(errs) => {
                m.config_reloads.with_label_values(&["error"]).inc();
                log::error!("config reload failed, the running config stays:");
                for e in &errs.0 {
                    log::error!("  {e}");
                }
                // Error messages may quote a value of the file: only their paths are kept.
                let mut paths: Vec<&str> = errs.0.iter().map(|e| e.path.as_str()).collect();
                paths.dedup();
                entry = AuditEntry::new(actor, "reload_failed", "config", None);
                entry.updated_values = serde_json::json!({
                    "result": "error", "errors": errs.0.len(), "paths": paths,
                });
            }
        }
        if let Some(keys) = &self.shared.keys {
            keys.audit(entry).await;
        }
        result.map(|(summary, _)| summary)
    }

    async fn try_reload(&self) -> Result<(String, (Vec<String>, usize)), ConfigErrors> {
        let cfg = self.source.load()?;
        let old = self.shared.state.load_full();
        warn_about_restart_only_settings(&old.config, &cfg);
        // Read every certificate first: a file that went bad since `check` fails the whole reload.
        let mut certificates = Vec::new();
        let mut errs = ConfigErrors::default();
        for (i, l) in cfg.server.listeners.iter().enumerate() {
            let (Some(tls), Some((_, store))) = (
                &l.tls,
                self.certificates.iter().find(|(a, _)| *a == l.listen),
            ) else {
                continue;
            };
            match crate::listener::tls::load(tls) {
                Ok(key) => certificates.push((store.clone(), key)),
                Err(e) => errs.push(&format!("server.listeners[{i}].tls"), e),
            }
        }
        if !errs.0.is_empty() {
            return Err(errs);
        }
        let state =
            State::build(Arc::new(cfg), Some(&old), Some(&self.shared.metrics)).map_err(|e| {
                let mut errs = ConfigErrors::default();
                errs.push("", format!("building upstream pools: {e}"));
                errs
            })?;
        // New upstreams get their addresses before they receive traffic.
        let new_pools: Vec<Arc<UpstreamPool>> = state
            .upstreams
            .iter()
            .filter(|p| !old.upstreams.iter().any(|o| Arc::ptr_eq(o, p)))
            .cloned()
            .collect();
        let discover = async {
            for p in &new_pools {
                p.discover().await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), discover)
            .await
            .is_err()
        {
            log::warn!("resolving new upstreams took over 5s; the health service keeps trying");
        }
        for gone in old
            .upstreams
            .iter()
            .filter(|o| !state.upstreams.iter().any(|n| n.cfg.name == o.cfg.name))
        {
            let _ = self
                .shared
                .metrics
                .upstream_healthy
                .remove_label_values(&[gone.cfg.name.as_str()]);
        }
        log::set_max_level(state.config.logging.level);
        let summary = format!(
            "{} models, {} upstreams ({} new or changed), {} routes",
            state.config.models.len(),
            state.upstreams.len(),
            new_pools.len(),
            state.config.routes.len()
        );
        let pools = state.upstreams.clone();
        let renewed = certificates.len();
        for (store, key) in certificates {
            store.replace(key);
        }
        let summary = if renewed > 0 {
            format!("{summary}, {renewed} TLS certificates re-read")
        } else {
            summary
        };
        let changed = changed_paths(&old.config.redacted, &state.config.redacted);
        self.shared.state.store(Arc::new(state));
        self.pools.send_replace(pools);
        Ok((summary, changed))
    }
}

fn warn_about_restart_only_settings(old: &Config, new: &Config) {
    let addrs = |c: &Config| {
        c.server
            .listeners
            .iter()
            .map(|l| l.listen)
            .collect::<Vec<_>>()
    };
    if addrs(old) != addrs(new) {
        log::warn!(
            "listener addresses changed: they take effect after a restart or a graceful upgrade (SIGQUIT + `llmproxy -u`)"
        );
    }
    if old.admin.listen != new.admin.listen {
        log::warn!("admin.listen changed: it takes effect after a restart or a graceful upgrade");
    }
    if old.server.threads != new.server.threads {
        log::warn!("server.threads changed: it takes effect after a restart or a graceful upgrade");
    }
    if old.state.database.expose() != new.state.database.expose()
        || (old.server.master_key.is_none() && new.server.master_key.is_some())
    {
        log::warn!(
            "state.database (or turning server.master_key on) takes effect after a restart or a graceful upgrade: until then only the master key is accepted, virtual keys are not"
        );
    }
    if old.server.proxy_protocol != new.server.proxy_protocol {
        log::warn!(
            "server.proxy_protocol changed: it takes effect after a restart or a graceful upgrade"
        );
    }
    for l in &new.server.listeners {
        let before = old.server.listeners.iter().find(|o| o.listen == l.listen);
        if before.is_some_and(|o| o.tls.is_some() != l.tls.is_some()) {
            log::warn!(
                "listener `{}`: turning TLS on or off takes effect after a restart or a graceful upgrade",
                l.name
            );
        }
    }
}

/// Reloads on `SIGHUP`.
pub struct ReloadService {
    pub reloader: Arc<Reloader>,
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot handle SIGHUP, reload only through POST /reload: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    log::info!("SIGHUP: reloading the config");
                    crate::sd_notify::notify("RELOADING=1");
                    let _ = self.reloader.reload(Actor::Signal).await;
                    crate::sd_notify::notify("READY=1");
                }
                _ = shutdown.changed() => if *shutdown.borrow() { return },
            }
        }
    }
}
