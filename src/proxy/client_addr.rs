//! The client's address as the gateway believes it: what the per-IP limit counts and the access
//! log writes.
//!
//! It starts as the connection's peer — the real client already when a PROXY protocol header named
//! it (see `listener::proxy_protocol`). When that peer is one of `server.trusted_proxies` (a reverse
//! proxy in front of the gateway), its `X-Forwarded-For` is read from the right, each address having
//! been appended by the hop before it: the right-most address that is not a trusted proxy is the
//! client (all trusted: the left-most). A header from any other peer is ignored, since anyone can
//! write one.

use crate::config::server::{canonical, TrustedProxies};
use pingora::proxy::Session;
use std::net::{IpAddr, SocketAddr};

/// The client's IP for this request; `None` for a peer without an IP (a unix socket).
pub fn client_ip(session: &Session, trusted: &TrustedProxies) -> Option<IpAddr> {
    let peer = canonical(session.client_addr()?.as_inet()?.ip());
    if trusted.is_empty() || !trusted.contains(peer) {
        return Some(peer);
    }
    let headers = session.req_header().headers.get_all("x-forwarded-for");
    let values = headers.iter().filter_map(|v| v.to_str().ok());
    Some(forwarded_client(peer, values, trusted))
}

/// Walk `X-Forwarded-For` (every header line, in order) from the right, starting at the trusted
/// `peer`: stop at the first untrusted address, or at an entry that is not an address (what lies
/// left of it cannot be attributed).
fn forwarded_client<'a>(
    peer: IpAddr,
    values: impl Iterator<Item = &'a str>,
    trusted: &TrustedProxies,
) -> IpAddr {
    let hops: Vec<&str> = values.flat_map(|v| v.split(',')).collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop.trim()) else {
            break;
        };
        client = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    client
}

/// `203.0.113.7`, `2001:db8::1`, and the forms with a port some proxies write (`203.0.113.7:4711`,
/// `[2001:db8::1]:4711`).
fn parse_hop(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .or_else(|_| s.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn right_most_untrusted_address_is_the_client() {
        let t = trusted(&["10.0.0.0/8", "127.0.0.1/32"]);
        let peer = ip("10.0.0.5");
        let at = |lines: &[&str]| forwarded_client(peer, lines.iter().copied(), &t);
        // A client-written (spoofed) entry on the left does not win.
        assert_eq!(at(&["1.1.1.1, 203.0.113.7, 10.0.0.9"]), ip("203.0.113.7"));
        // Several header lines are one list.
        assert_eq!(
            at(&["1.1.1.1", "203.0.113.7:4711", "10.0.0.9"]),
            ip("203.0.113.7")
        );
        assert_eq!(at(&["[2001:db8::1]:80"]), ip("2001:db8::1"));
        // Every hop trusted: the left-most.
        assert_eq!(at(&["10.1.1.1, 10.0.0.9"]), ip("10.1.1.1"));
        // Garbage stops the walk at the last address that was attributable.
        assert_eq!(at(&["203.0.113.7, unknown, 10.0.0.9"]), ip("10.0.0.9"));
        assert_eq!(at(&["nonsense"]), peer);
        // No header: the peer.
        assert_eq!(at(&[]), peer);
    }

    #[test]
    fn mapped_ipv4_addresses_match_ipv4_cidrs() {
        let t = trusted(&["10.0.0.0/8"]);
        assert!(t.contains(ip("::ffff:10.1.2.3")));
        assert_eq!(
            forwarded_client(ip("10.0.0.1"), ["::ffff:203.0.113.7"].into_iter(), &t),
            ip("203.0.113.7")
        );
    }
}
