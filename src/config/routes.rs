//! `routes:` — path-prefix passthrough to an upstream (seed 000): `/openai/...` goes to the upstream
//! as-is, with its auth and header operations, but without model routing or body rewriting.

use super::reader::{Node, Reader};

#[derive(Debug, Clone)]
pub struct Route {
    /// Starts with `/`, no trailing slash.
    pub prefix: String,
    pub upstream: String,
    pub upstream_idx: usize,
}

pub fn read(r: &mut Reader, node: Node) -> Option<Route> {
    let m = node.map(r, &["prefix", "upstream"])?;
    let prefix = m.required(r, "prefix", |r, n| {
        let p = n.string(r)?;
        let trimmed = p.trim_end_matches('/').to_string();
        if !p.starts_with('/') || trimmed.is_empty() || p.contains("..") {
            r.error(n.path, format!("`{p}` must be a path like `/openai`"));
            return None;
        }
        Some(trimmed)
    });
    let upstream = m.required(r, "upstream", |r, n| n.string(r));
    Some(Route {
        prefix: prefix?,
        upstream: upstream?,
        upstream_idx: usize::MAX,
    })
}
