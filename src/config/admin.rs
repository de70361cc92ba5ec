//! `admin:` — the admin listener (health, metrics, config), loopback by default.

use super::reader::{Node, Reader};
use super::secret::Secret;
use std::net::SocketAddr;

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Optional bearer token required on every admin request.
    pub token: Option<Secret>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9000)),
            token: None,
        }
    }
}

pub fn read(r: &mut Reader, node: Node) -> Option<AdminConfig> {
    let m = node.map(r, &["listen", "token"])?;
    let d = AdminConfig::default();
    let listen = m
        .with(r, "listen", |r, n| {
            let s = n.string(r)?;
            s.parse::<SocketAddr>()
                .map_err(|_| r.error(n.path, format!("`{s}` is not an IP:port address")))
                .ok()
        })
        .unwrap_or(d.listen);
    let token = m
        .with(r, "token", |r, n| n.string(r))
        .filter(|t| !t.is_empty())
        .map(Secret::new);
    Some(AdminConfig { listen, token })
}
