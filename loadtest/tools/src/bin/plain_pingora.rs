//! `plain_pingora` — a featureless Pingora 0.9 reverse proxy: the framework's own floor.
//!
//! Every request goes to one fixed upstream (`--upstream`, plain HTTP/1.1, pooled keepalive
//! connections); no body parsing, no routing, no metrics, no logging. The load test compares
//! llmproxy with it to separate "what Pingora costs" from "what llmproxy adds".
//!
//! ```text
//! plain_pingora --listen 127.0.0.1:PORT --upstream 127.0.0.1:MOCKPORT [--threads 2]
//! ```
//! `--threads` must equal llmproxy's `server.threads` in the benchmark config; the upstream
//! keepalive pool size per thread equals llmproxy's (256). SIGINT exits at once.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use clap::Parser;
use pingora::prelude::*;
use pingora::server::configuration::{Opt, ServerConf};

#[derive(Parser, Debug)]
#[command(name = "plain_pingora", about = "Featureless Pingora reverse proxy (load-test floor)")]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// The single upstream (host:port, plain HTTP).
    #[arg(long)]
    upstream: SocketAddr,
    /// Worker threads (ServerConf.threads); keep equal to llmproxy's server.threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

struct Plain {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Plain {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        peer.options.connection_timeout = Some(Duration::from_secs(5));
        peer.options.read_timeout = Some(Duration::from_secs(120));
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }
}

fn main() {
    let cli = Cli::parse();
    let mut conf = ServerConf::default();
    conf.threads = cli.threads;
    conf.upstream_keepalive_pool_size = 256;
    conf.grace_period_seconds = Some(0);
    conf.graceful_shutdown_timeout_seconds = Some(1);
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(
        &server.configuration,
        Plain {
            upstream: cli.upstream,
        },
    );
    proxy.add_tcp(&cli.listen.to_string());
    server.add_service(proxy);
    println!(
        "plain_pingora listening on {} -> {} ({} threads)",
        cli.listen, cli.upstream, cli.threads
    );
    server.run_forever();
}
