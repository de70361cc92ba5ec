//! Outbound HTTP proxy (`upstreams[].client.proxy`): the TCP connection to the upstream is opened with
//! `CONNECT host:port` through the proxy; Pingora then runs TLS and HTTP over it as usual. Pingora's own
//! `HttpPeer::proxy` only reaches proxies over Unix sockets, so this plugs in as a custom L4 connector.

use crate::config::upstreams::OutboundProxy;
use async_trait::async_trait;
use pingora::connectors::L4Connect;
use pingora::prelude::*;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::l4::stream::Stream;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The largest proxy response header accepted.
const MAX_HEADER: usize = 8 * 1024;

#[derive(Debug)]
pub struct ConnectProxy {
    pub proxy: OutboundProxy,
    /// The upstream host and port asked for in `CONNECT` (by name: the proxy resolves it).
    pub target: String,
    pub timeout: Duration,
}

#[async_trait]
impl L4Connect for ConnectProxy {
    async fn connect(&self, _addr: &SocketAddr) -> Result<Stream> {
        match tokio::time::timeout(self.timeout, self.tunnel()).await {
            Ok(r) => r,
            Err(_) => Error::e_explain(ConnectTimedout, "connecting through the outbound proxy"),
        }
    }
}

impl ConnectProxy {
    async fn tunnel(&self) -> Result<Stream> {
        let mut tcp = tokio::net::TcpStream::connect((self.proxy.host.as_str(), self.proxy.port))
            .await
            .or_err(ConnectRefused, "connecting to the outbound proxy")?;
        let _ = tcp.set_nodelay(true);
        let mut req = format!("CONNECT {t} HTTP/1.1\r\nHost: {t}\r\n", t = self.target);
        if let Some(auth) = &self.proxy.authorization {
            req.push_str("Proxy-Authorization: ");
            req.push_str(auth.expose());
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        tcp.write_all(req.as_bytes())
            .await
            .or_err(WriteError, "writing CONNECT to the outbound proxy")?;
        // Read the proxy's answer byte-wise up to the blank line, so no tunnelled byte is consumed.
        let mut head = Vec::with_capacity(256);
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_HEADER {
                return Error::e_explain(
                    InvalidHTTPHeader,
                    "outbound proxy response header too large",
                );
            }
            let n = tcp
                .read(&mut byte)
                .await
                .or_err(ReadError, "reading the outbound proxy's CONNECT answer")?;
            if n == 0 {
                return Error::e_explain(ConnectionClosed, "outbound proxy closed the connection");
            }
            head.push(byte[0]);
        }
        let status_ok = head
            .split(|b| *b == b' ')
            .nth(1)
            .is_some_and(|code| code.starts_with(b"2"));
        if !status_ok {
            let line =
                String::from_utf8_lossy(head.split(|b| *b == b'\r').next().unwrap_or_default())
                    .into_owned();
            return Error::e_explain(
                ConnectProxyFailure,
                format!("outbound proxy refused CONNECT: {line}"),
            );
        }
        Ok(tcp.into())
    }
}
