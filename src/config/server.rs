//! `server:` — client listeners, worker threads, body limit and client timeouts.

use super::reader::{Map, Node, Reader};
use std::net::SocketAddr;
use std::time::Duration;

/// One OpenAI-compatible listener (a seed-001 "forward").
#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub listen: SocketAddr,
    /// Model names (or aliases) this listener serves; empty = all.
    pub models: Vec<String>,
    /// Per-client-IP token bucket (seed 001).
    pub client_ratelimit: Option<ClientRateLimit>,
}

/// `listeners[].client_ratelimit`: each client IP may send `per_second` requests on average and
/// `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientRateLimit {
    pub per_second: f64,
    pub burst: f64,
}

/// Timeouts applied to client connections.
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    /// Reading a request (header and body) from the client.
    pub header: Duration,
    /// Keep-alive: how long an idle client connection stays open.
    pub idle: Duration,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listeners: Vec<Listener>,
    /// Worker threads (resolved: never 0).
    pub threads: usize,
    pub max_request_body: usize,
    pub client_timeouts: ClientTimeouts,
    /// How long SIGTERM waits for requests in flight before the process exits.
    pub grace_period: Duration,
    /// Unix socket through which a graceful upgrade (`-u`) takes over the listening sockets.
    pub upgrade_sock: String,
    /// Written in daemon mode (`-d`).
    pub pid_file: String,
}

pub const DEFAULT_MAX_BODY: usize = 8 << 20;

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }
}

pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

pub fn read(r: &mut Reader, node: Node) -> Option<ServerConfig> {
    let m = node.map(
        r,
        &[
            "listeners",
            "threads",
            "max_request_body",
            "client_timeouts",
            "master_key",
            "trusted_proxies",
            "proxy_protocol",
            "grace_period",
            "upgrade_sock",
            "pid_file",
        ],
    )?;
    let listeners = m
        .required(r, "listeners", |r, n| {
            Some(n.non_empty_list(r, read_listener))
        })
        .unwrap_or_default();
    let threads = m.with(r, "threads", |r, n| n.u64(r)).unwrap_or(0) as usize;
    let max_request_body = m
        .with(r, "max_request_body", |r, n| n.size(r))
        .unwrap_or(DEFAULT_MAX_BODY);
    let client_timeouts = m
        .with(r, "client_timeouts", read_client_timeouts)
        .unwrap_or_default();
    // master_key: empty (the default `${LLMPROXY_MASTER_KEY:-}`) means "auth off"; a value needs the
    // keys feature, which this build does not have yet.
    if let Some(key) = m.with(r, "master_key", |r, n| n.string(r)) {
        if !key.is_empty() {
            r.error(
                &format!("{}.master_key", m.path()),
                "client authentication is not implemented by this version of llmproxy yet",
            );
        }
    }
    reject_non_default(r, &m);
    let grace_period = m
        .with(r, "grace_period", |r, n| n.duration(r))
        .unwrap_or(Duration::from_secs(30));
    let upgrade_sock = m
        .with(r, "upgrade_sock", |r, n| n.string(r))
        .unwrap_or_else(|| "/tmp/llmproxy-upgrade.sock".into());
    let pid_file = m
        .with(r, "pid_file", |r, n| n.string(r))
        .unwrap_or_else(|| "/tmp/llmproxy.pid".into());
    Some(ServerConfig {
        listeners,
        threads: if threads == 0 {
            default_threads()
        } else {
            threads
        },
        max_request_body,
        client_timeouts,
        grace_period,
        upgrade_sock,
        pid_file,
    })
}

fn reject_non_default(r: &mut Reader, m: &Map) {
    if m.with(r, "proxy_protocol", |r, n| n.bool(r)) == Some(true) {
        r.error(
            &format!("{}.proxy_protocol", m.path()),
            "PROXY protocol is not implemented by this version of llmproxy yet",
        );
    }
    let cidrs = m
        .with(r, "trusted_proxies", |r, n| Some(n.list_of_strings(r)))
        .unwrap_or_default();
    if !cidrs.is_empty() {
        r.error(
            &format!("{}.trusted_proxies", m.path()),
            "trusted proxies are not implemented by this version of llmproxy yet",
        );
    }
}

fn read_listener(r: &mut Reader, n: Node) -> Option<Listener> {
    let m = n.map(r, &["name", "listen", "models", "client_ratelimit", "tls"])?;
    m.not_yet(r, &["tls"]);
    let name = m.required(r, "name", |r, n| n.string(r));
    let listen = m.required(r, "listen", |r, n| {
        let s = n.string(r)?;
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                r.error(n.path, format!("`{s}` is not an IP:port address"));
                None
            }
        }
    });
    let models = m
        .with(r, "models", |r, n| Some(n.list_of_strings(r)))
        .unwrap_or_default();
    let client_ratelimit = m.with(r, "client_ratelimit", read_client_ratelimit);
    Some(Listener {
        name: name?,
        listen: listen?,
        models,
        client_ratelimit,
    })
}

fn read_client_ratelimit(r: &mut Reader, n: Node) -> Option<ClientRateLimit> {
    let m = n.map(r, &["per_second", "burst"])?;
    let per_second = m.required(r, "per_second", |r, n| n.u64(r))?;
    if per_second == 0 {
        r.error(
            &format!("{}.per_second", m.path()),
            "per_second must be positive (leave client_ratelimit out for no limit)",
        );
        return None;
    }
    let burst = m.with(r, "burst", |r, n| n.u64(r)).unwrap_or(per_second);
    if burst == 0 {
        r.error(&format!("{}.burst", m.path()), "burst must be positive");
        return None;
    }
    Some(ClientRateLimit {
        per_second: per_second as f64,
        burst: burst as f64,
    })
}

fn read_client_timeouts(r: &mut Reader, n: Node) -> Option<ClientTimeouts> {
    let m = n.map(r, &["header", "idle"])?;
    let d = ClientTimeouts::default();
    Some(ClientTimeouts {
        header: m
            .with(r, "header", |r, n| n.duration(r))
            .unwrap_or(d.header),
        idle: m.with(r, "idle", |r, n| n.duration(r)).unwrap_or(d.idle),
    })
}
