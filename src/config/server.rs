//! `server:` — client listeners (with optional TLS), worker threads, body limit, client timeouts,
//! and how client addresses are learnt behind a load balancer (PROXY protocol, trusted proxies).

use super::reader::{Node, Reader};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// One OpenAI-compatible listener (a "forward").
#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub listen: SocketAddr,
    /// Model names (or aliases) this listener serves; empty = all.
    pub models: Vec<String>,
    /// The passthrough routes (`routes[]`) this listener serves, by prefix as written; resolved
    /// into [`Listener::route_scope`] at load.
    pub routes: Option<Vec<String>>,
    /// Which passthrough routes this listener serves (resolved from `routes`).
    pub route_scope: RouteScope,
    /// Per-client-IP token bucket.
    pub client_ratelimit: Option<ClientRateLimit>,
    /// HTTPS on this listener (HTTP/2 by ALPN).
    pub tls: Option<ListenerTls>,
}

/// The passthrough routes a listener serves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RouteScope {
    /// Every route (a listener with no `models` scope and no `routes` list).
    #[default]
    All,
    /// These routes only (indices into `Config::routes`); a listener scoped to some models serves
    /// no route unless it lists it.
    Only(Vec<usize>),
}

impl RouteScope {
    pub fn allows(&self, route: usize) -> bool {
        match self {
            RouteScope::All => true,
            RouteScope::Only(list) => list.contains(&route),
        }
    }
}

/// `listeners[].tls`: PEM files, read at start and again on every reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// The certificate chain (leaf first).
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `server.trusted_proxies`: the load balancers and reverse proxies whose word about the client's
/// address (a PROXY protocol header, an `X-Forwarded-For` header) is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl TrustedProxies {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a dual-stack socket reports) as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
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
    /// When set, every client call needs it or a valid virtual key.
    pub master_key: Option<super::secret::Secret>,
    /// Worker threads (resolved: never 0).
    pub threads: usize,
    pub max_request_body: usize,
    pub client_timeouts: ClientTimeouts,
    /// How long SIGTERM waits for requests in flight before the process exits.
    pub grace_period: Duration,
    /// Open client connections one IP may hold; more are closed at once.
    pub max_connections_per_ip: usize,
    /// Open client connections in all, kept below the process's file-descriptor limit so the admin
    /// listener (and upstream connections) always have room.
    pub max_connections: usize,
    /// Unix socket through which a graceful upgrade (`-u`) takes over the listening sockets.
    pub upgrade_sock: String,
    /// Written in daemon mode (`-d`).
    pub pid_file: String,
    /// Every client connection starts with a PROXY protocol (v1 or v2) header naming the client.
    pub proxy_protocol: bool,
    /// Peers allowed to send PROXY headers (when non-empty) and whose `X-Forwarded-For` is read.
    pub trusted_proxies: TrustedProxies,
}

pub const DEFAULT_MAX_BODY: usize = 8 << 20;

/// `server.max_connections_per_ip` when not set.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;

/// `server.max_connections` when not set: half the file descriptors the process may open (each
/// client connection may hold an upstream one too), less room for the admin listener, upstream
/// pools, the databases and the log, and at least 64.
pub fn default_max_connections() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass; no other precondition.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    };
    let soft = usize::try_from(soft).unwrap_or(usize::MAX).min(1 << 24);
    (soft.saturating_sub(256) / 2).max(64)
}

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
            "max_connections_per_ip",
            "max_connections",
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
    // master_key: empty (the default `${LLMPROXY_MASTER_KEY:-}`) means "auth off" (warned at start).
    let master_key = m
        .with(r, "master_key", |r, n| n.string(r))
        .filter(|k| !k.is_empty())
        .map(super::secret::Secret::new);
    if master_key.as_ref().is_some_and(|k| k.expose().len() < 8) {
        r.error(
            &format!("{}.master_key", m.path()),
            "must be at least 8 characters (it guards every client call and the key API)",
        );
    }
    let proxy_protocol = m
        .with(r, "proxy_protocol", |r, n| n.bool(r))
        .unwrap_or(false);
    let trusted_proxies = TrustedProxies(
        m.with(r, "trusted_proxies", |r, n| Some(n.list(r, read_cidr)))
            .unwrap_or_default(),
    );
    let max_connections_per_ip = m
        .with(r, "max_connections_per_ip", |r, n| n.u64(r))
        .map_or(DEFAULT_MAX_CONNECTIONS_PER_IP, |n| n as usize);
    let max_connections = m
        .with(r, "max_connections", |r, n| n.u64(r))
        .map_or_else(default_max_connections, |n| n as usize);
    for (key, v) in [
        ("max_connections_per_ip", max_connections_per_ip),
        ("max_connections", max_connections),
    ] {
        if v == 0 {
            r.error(&format!("{}.{key}", m.path()), "must be at least 1");
        }
    }
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
        max_connections_per_ip,
        max_connections,
        upgrade_sock,
        pid_file,
        proxy_protocol,
        trusted_proxies,
        master_key,
    })
}

/// A CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a single address (`127.0.0.1`, as a /32 or /128).
fn read_cidr(r: &mut Reader, n: Node) -> Option<IpNet> {
    let s = n.string(r)?;
    let parsed = s
        .parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from));
    match parsed {
        Ok(net) => Some(net.trunc()),
        Err(_) => {
            r.error(
                n.path,
                format!("`{s}` is not a CIDR (like 10.0.0.0/8) or an IP address"),
            );
            None
        }
    }
}

fn read_listener(r: &mut Reader, n: Node) -> Option<Listener> {
    let m = n.map(
        r,
        &[
            "name",
            "listen",
            "models",
            "routes",
            "client_ratelimit",
            "tls",
        ],
    )?;
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
    let routes = m.with(r, "routes", |r, n| Some(n.list_of_strings(r)));
    let client_ratelimit = m.with(r, "client_ratelimit", read_client_ratelimit);
    let tls = m.with(r, "tls", read_tls);
    Some(Listener {
        name: name?,
        listen: listen?,
        models,
        routes,
        route_scope: RouteScope::All,
        client_ratelimit,
        tls,
    })
}

/// `tls: {cert, key}`: both files must be readable PEM, the key must match the certificate (the
/// same loading the listener does, so `check` catches what would fail at start or reload).
fn read_tls(r: &mut Reader, n: Node) -> Option<ListenerTls> {
    let m = n.map(r, &["cert", "key"])?;
    let cert = m.required(r, "cert", |r, n| n.string(r));
    let key = m.required(r, "key", |r, n| n.string(r));
    let tls = ListenerTls {
        cert: cert?.into(),
        key: key?.into(),
    };
    if let Err(e) = crate::listener::tls::load(&tls) {
        r.error(m.path(), e);
        return None;
    }
    Some(tls)
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
