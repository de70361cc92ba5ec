//! PROXY protocol (HAProxy's spec, v1 text and v2 binary) on client connections:
//! `server.proxy_protocol: true` puts an L4 load balancer in front of the gateway without losing
//! the client's address.
//!
//! Every client connection must then open with a header naming the client; the connection's peer
//! address becomes the one in the header, so `session.client_addr()` — the per-IP limit, the access
//! log — sees the real client. A connection without a valid header, or (when
//! `server.trusted_proxies` is non-empty) from a TCP peer outside that list, is closed without an
//! answer: the address it would claim cannot be believed.
//!
//! How the address reaches the proxy: Pingora keeps each connection's peer address in the
//! [`SocketDigest`] of its L4 stream (a `OnceCell`, filled at `accept`), and every HTTP session (H1,
//! H2, over TLS or not) reads it from there. That cell is already set when we see the connection, so
//! the stream gets a fresh digest for the same socket with the announced address preset. Bytes read
//! past the header (the start of the request or of the TLS handshake) are handed back with Pingora's
//! own [`L4Stream::rewind`], so the header is consumed exactly and nothing after it is lost.
//!
//! Plain listeners parse the header in [`super::Draining::process_new`] (Pingora's pre-TLS hook
//! runs only for TLS listeners); TLS listeners parse it in that hook, before the handshake
//! ([`PreTlsProcess`]).

use crate::config::server::TrustedProxies;
use crate::state::Shared;
use async_trait::async_trait;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream};
use ppp::{HeaderResult, PartialResult};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 signature (12 bytes), then version/command, family/protocol and a 2-byte length.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_FIXED: usize = 16;
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 line the spec allows, CRLF included.
const V1_MAX: usize = 107;
/// First read: a v1 line or a v2 header with IPv6 addresses and a few TLVs in one go.
const FIRST_READ: usize = 256;

/// What a header said about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announced {
    /// `PROXY` command (v2) or `TCP4`/`TCP6` (v1): the client's address.
    Client(SocketAddr),
    /// `LOCAL` command (the balancer's own health check) or `UNKNOWN`/unix/unspecified family: the
    /// connection speaks for itself, its TCP peer stays its address.
    Local,
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Read one PROXY header from `io`. Returns what it announced and the bytes read past it (to be
/// replayed); refuses anything that is not a complete, valid v1 or v2 header.
pub async fn read_header<R: AsyncRead + Unpin>(
    io: &mut R,
) -> Result<(Announced, Vec<u8>), Refused> {
    let mut buf = vec![0u8; FIRST_READ];
    let mut filled = 0;
    loop {
        let n = io
            .read(&mut buf[filled..])
            .await
            .map_err(|e| Refused(format!("reading the PROXY header: {e}")))?;
        if n == 0 {
            return Err(Refused(if filled == 0 {
                "closed before sending anything".into()
            } else {
                "closed inside the PROXY header".into()
            }));
        }
        filled += n;
        let got = &buf[..filled];
        let v2 = looks_like(got, V2_SIGNATURE);
        if !v2 && !looks_like(got, V1_PREFIX) {
            return Err(Refused(
                "the connection does not start with a PROXY protocol header".into(),
            ));
        }
        if v2 {
            if filled < V2_FIXED {
                continue;
            }
            let total = V2_FIXED + u16::from_be_bytes([got[14], got[15]]) as usize;
            if filled < total {
                if buf.len() < total {
                    buf.resize(total, 0);
                }
                continue;
            }
        } else if !got.contains(&b'\n') {
            if filled >= V1_MAX {
                return Err(Refused("PROXY v1 header longer than 107 bytes".into()));
            }
            continue;
        }
        let got = &buf[..filled];
        let parsed = HeaderResult::parse(got);
        if parsed.is_incomplete() {
            continue;
        }
        let (announced, len) = match parsed {
            HeaderResult::V1(Ok(h)) => (announced_v1(&h.addresses), h.header.len()),
            HeaderResult::V2(Ok(h)) => (announced_v2(&h), h.len()),
            HeaderResult::V1(Err(e)) => return Err(Refused(format!("bad PROXY v1 header: {e}"))),
            HeaderResult::V2(Err(e)) => return Err(Refused(format!("bad PROXY v2 header: {e}"))),
        };
        return Ok((announced, got[len..].to_vec()));
    }
}

/// `got` is (the start of) `prefix` or starts with it.
fn looks_like(got: &[u8], prefix: &[u8]) -> bool {
    let n = got.len().min(prefix.len());
    got[..n] == prefix[..n]
}

fn announced_v1(a: &ppp::v1::Addresses) -> Announced {
    use ppp::v1::Addresses;
    match a {
        Addresses::Tcp4(a) => {
            Announced::Client(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        Addresses::Tcp6(a) => {
            Announced::Client(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        Addresses::Unknown => Announced::Local,
    }
}

fn announced_v2(h: &ppp::v2::Header) -> Announced {
    use ppp::v2::{Addresses, Command};
    if h.command == Command::Local {
        return Announced::Local;
    }
    match h.addresses {
        Addresses::IPv4(a) => {
            Announced::Client(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        Addresses::IPv6(a) => {
            Announced::Client(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        Addresses::Unspecified | Addresses::Unix(_) => Announced::Local,
    }
}

/// The PROXY protocol layer of the proxy service's listeners.
pub struct ProxyProtocol {
    /// The running config's `server.trusted_proxies` (reloadable).
    shared: Arc<Shared>,
    /// How long a new connection may take to send its header.
    header_timeout: Duration,
}

impl ProxyProtocol {
    pub fn new(shared: Arc<Shared>, header_timeout: Duration) -> Self {
        ProxyProtocol {
            shared,
            header_timeout,
        }
    }

    /// Check the TCP peer, read the header and make its address the connection's peer address.
    pub async fn accept(&self, stream: &mut L4Stream) -> Result<(), Refused> {
        let trusted = self
            .shared
            .state
            .load()
            .config
            .server
            .trusted_proxies
            .clone();
        accept(stream, &trusted, self.header_timeout).await
    }

    /// For a plain listener's connection (an L4 stream); other streams (TLS, whose header was read
    /// before the handshake) pass unchanged. `None`: refused, the connection is dropped.
    pub async fn accept_plain(&self, stream: Stream) -> Option<Stream> {
        if !stream.as_any().is::<L4Stream>() {
            return Some(stream);
        }
        let mut l4: Box<L4Stream> = stream.into_any().downcast().ok()?;
        match self.accept(&mut l4).await {
            Ok(()) => Some(l4),
            Err(e) => {
                refused(&l4, &e);
                None
            }
        }
    }
}

fn refused(stream: &L4Stream, why: &Refused) {
    let peer = tcp_peer(stream)
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "?".into());
    if why.0.starts_with("closed before") {
        // Port probes and the readiness check.
        log::debug!("PROXY protocol: connection from {peer} {why}");
    } else {
        log::warn!("PROXY protocol: closing the connection from {peer}: {why}");
    }
}

fn tcp_peer(stream: &L4Stream) -> Option<IpAddr> {
    let digest = stream.get_socket_digest()?;
    let ip = digest.peer_addr()?.as_inet()?.ip();
    Some(crate::config::server::canonical(ip))
}

async fn accept(
    stream: &mut L4Stream,
    trusted: &TrustedProxies,
    limit: Duration,
) -> Result<(), Refused> {
    if !trusted.is_empty() {
        match tcp_peer(stream) {
            Some(ip) if trusted.contains(ip) => {}
            Some(ip) => return Err(Refused(format!("{ip} is not in server.trusted_proxies"))),
            None => return Err(Refused("unknown peer address".into())),
        }
    }
    let (announced, rest) = tokio::time::timeout(limit, read_header(stream))
        .await
        .map_err(|_| Refused(format!("no complete PROXY header within {limit:?}")))??;
    stream.rewind(&rest);
    if let Announced::Client(addr) = announced {
        let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
        // A fresh cell: setting it cannot fail.
        let _ = digest.peer_addr.set(Some(PeerAddr::Inet(addr)));
        stream.set_socket_digest(digest);
    }
    Ok(())
}

/// TLS listeners: the header comes before the TLS handshake.
#[async_trait]
impl PreTlsProcess for ProxyProtocol {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        self.accept(stream).await.map_err(|e| {
            refused(stream, &e);
            pingora::Error::explain(pingora::ErrorType::AcceptError, e.0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use tokio::io::AsyncWriteExt;

    /// Feed `chunks` (written one by one, as a slow balancer would) and read one header.
    async fn read(chunks: &[&[u8]]) -> Result<(Announced, Vec<u8>), Refused> {
        let (mut tx, mut rx) = tokio::io::duplex(1 << 16);
        let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        // The writer hangs up after the last chunk, as a client that stops would.
        let writer = tokio::spawn(async move {
            for c in chunks {
                tx.write_all(&c).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let out = read_header(&mut rx).await;
        writer.await.unwrap();
        out
    }

    fn v2(command: u8, family: u8, addrs: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&((addrs.len() + tlvs.len()) as u16).to_be_bytes());
        h.extend_from_slice(addrs);
        h.extend_from_slice(tlvs);
        h
    }

    #[tokio::test]
    async fn v1_tcp4_and_tcp6_with_the_request_after_it() {
        let (a, rest) = read(&[b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 4000\r\nGET / HTTP/1.1\r\n"])
            .await
            .unwrap();
        assert_eq!(
            a,
            Announced::Client(SocketAddr::new(Ipv4Addr::new(192, 0, 2, 7).into(), 51234))
        );
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");

        let (a, rest) = read(&[b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"])
            .await
            .unwrap();
        let ip: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(a, Announced::Client(SocketAddr::new(ip.into(), 1)));
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn v1_split_across_reads_and_unknown() {
        let (a, rest) = read(&[b"PRO", b"XY TCP4 192.0.2.7 10.0.0", b".1 5 6\r", b"\nx"])
            .await
            .unwrap();
        assert_eq!(
            a,
            Announced::Client(SocketAddr::new(Ipv4Addr::new(192, 0, 2, 7).into(), 5))
        );
        assert_eq!(rest, b"x");
        let (a, rest) = read(&[b"PROXY UNKNOWN\r\nGET"]).await.unwrap();
        assert_eq!(a, Announced::Local);
        assert_eq!(rest, b"GET");
    }

    #[tokio::test]
    async fn v2_proxy_local_tlvs_and_split_reads() {
        let addrs = [192, 0, 2, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x0f, 0xa0];
        // A NOOP TLV (type 4, length 3) after the addresses, then the request.
        let mut h = v2(1, 0x11, &addrs, &[4, 0, 3, 1, 2, 3]);
        let len = h.len();
        h.extend_from_slice(b"POST /v1");
        let (a, rest) = read(&[&h[..5], &h[5..17], &h[17..]]).await.unwrap();
        assert_eq!(
            a,
            Announced::Client(SocketAddr::new(Ipv4Addr::new(192, 0, 2, 9).into(), 8080))
        );
        assert_eq!(rest, &h[len..]);

        // LOCAL (a health check): the peer speaks for itself.
        let h = v2(0, 0x00, &[], &[]);
        assert_eq!(read(&[&h]).await.unwrap(), (Announced::Local, vec![]));

        // IPv6.
        let mut addrs = Vec::new();
        addrs.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        addrs.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        addrs.extend_from_slice(&[0, 80, 0, 81]);
        let h = v2(1, 0x21, &addrs, &[]);
        let (a, _) = read(&[&h]).await.unwrap();
        assert_eq!(
            a,
            Announced::Client(SocketAddr::new(
                "2001:db8::7".parse::<IpAddr>().unwrap(),
                80
            ))
        );
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"\x16\x03\x01\x02\x00",    // a TLS ClientHello
            b"PROXY TCP4 nonsense\r\n", // v1 with garbage
            b"PROXY TCP4 192.0.2.7 10.0.0.1 99999 1\r\n",
            b"proxy TCP4 192.0.2.7 10.0.0.1 1 1\r\n",
        ] {
            assert!(
                read(&[bad]).await.is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // v1 without its CRLF within 107 bytes.
        let long = format!("PROXY TCP4 {}", "1".repeat(120));
        assert!(read(&[long.as_bytes()]).await.is_err());
        // v2 with a bad version nibble.
        let mut h = v2(1, 0x11, &[0; 12], &[]);
        h[12] = 0x31;
        assert!(read(&[&h]).await.is_err());
        // Closed inside the header.
        assert!(read(&[b"PROXY TCP4 192.0"]).await.is_err());
        assert!(read(&[]).await.is_err());
    }

    /// A real socket: the header's address replaces the peer address in the stream's digest, and
    /// the request bytes after it are read back first; an untrusted peer is refused before reading.
    #[tokio::test]
    async fn the_announced_address_becomes_the_peer_and_untrusted_peers_are_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept_one = || async {
            let (tcp, peer) = listener.accept().await.unwrap();
            let mut s: L4Stream = tcp.into();
            let d = SocketDigest::from_raw_fd(s.as_raw_fd());
            d.peer_addr.set(Some(PeerAddr::Inet(peer))).unwrap();
            s.set_socket_digest(d);
            s
        };
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"PROXY TCP4 198.51.100.4 127.0.0.1 4444 80\r\nGET /")
            .await
            .unwrap();
        let mut s = accept_one().await;
        let trusted = TrustedProxies(vec!["127.0.0.0/8".parse().unwrap()]);
        accept(&mut s, &trusted, Duration::from_secs(5))
            .await
            .unwrap();
        let peer = s.get_socket_digest().unwrap().peer_addr().cloned();
        assert_eq!(
            peer.and_then(|p| p.as_inet().copied()),
            Some("198.51.100.4:4444".parse().unwrap())
        );
        let mut rest = [0u8; 5];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"GET /");

        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut s = accept_one().await;
        let only_elsewhere = TrustedProxies(vec!["10.0.0.0/8".parse().unwrap()]);
        let e = accept(&mut s, &only_elsewhere, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.0.contains("not in server.trusted_proxies"), "{e}");
    }
}
