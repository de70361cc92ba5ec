//! `upstreams[].client.proxy`: requests reach the upstream only through a real HTTP CONNECT proxy
//! (tinyproxy from Debian, installed by `scripts/install-deps --test`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test stops at the first surprise and prints what it measured"
)]
mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Tinyproxy {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn tinyproxy(basic_auth: Option<(&str, &str)>) -> Tinyproxy {
    let port = free_port();
    let log = tmp_path("tinyproxy.log");
    let conf = tmp_path("tinyproxy.conf");
    let auth = basic_auth
        .map(|(u, p)| format!("BasicAuth {u} {p}\n"))
        .unwrap_or_default();
    // No ConnectPort line: CONNECT to any port is allowed (the mock listens on an ephemeral one).
    std::fs::write(
        &conf,
        format!("Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 30\nLogFile \"{}\"\nLogLevel Connect\nMaxClients 50\n{auth}", log.display()),
    )
    .unwrap();
    let child = Command::new("tinyproxy")
        .args(["-d", "-c", conf.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tinyproxy (apt-get install tinyproxy; scripts/install-deps --test does it)");
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "tinyproxy did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Tinyproxy { child, port, log }
}

#[tokio::test]
async fn requests_go_through_the_connect_proxy() {
    let a = Mock::start("A");
    let proxy = tinyproxy(Some(("gw", "s3cret"))).await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  - {{name: a, url: \"{}\", client: {{proxy: \"http://gw:s3cret@127.0.0.1:{}\"}}, health_check: {{interval: 200ms}}}}\nmodels:\n  - {{name: m, deployments: [{{upstream: a, model: m}}]}}\n",
        a.url(),
        proxy.port
    )))
    .await;
    for _ in 0..3 {
        let r = gw.chat("m").await;
        assert_eq!(r.status(), 200);
        assert_eq!(served_by(&r), "A");
    }
    let log = std::fs::read_to_string(&proxy.log).unwrap_or_default();
    let target = format!("127.0.0.1:{}", a.port);
    assert!(
        log.lines()
            .any(|l| l.contains("CONNECT") && l.contains(&target)),
        "tinyproxy saw no CONNECT to the mock:\n{log}"
    );
    // Health checks went through the proxy too.
    let v = gw.upstreams().await;
    assert_eq!(v["healthy_endpoints"].as_array().unwrap().len(), 1);

    // Wrong proxy credentials: nothing reaches the upstream; a clean 502.
    drop(gw);
    a.reset().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  - {{name: a, url: \"{}\", client: {{proxy: \"http://gw:wrong@127.0.0.1:{}\"}}, health_check: {{interval: 0s}}}}\nmodels:\n  - {{name: m, deployments: [{{upstream: a, model: m}}]}}\n",
        a.url(),
        proxy.port
    )))
    .await;
    assert_openai_error(gw.chat("m").await, 502, "upstream_error").await;
    assert!(a.requests_to("/v1/chat/completions").await.is_empty());
}
