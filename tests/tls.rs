//! Issue 10, TLS at the edge: `listeners[].tls` serves HTTPS with HTTP/2 by ALPN (HTTP/1.1 for
//! clients that ask for it), certificates are checked by `llmproxy check`, re-read on SIGHUP for new
//! handshakes while open connections keep going, and PROXY protocol works in front of TLS.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test stops at the first surprise and prints what it measured"
)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

fn tls_config(mock: &Mock, cert: &Path, key: &Path, extra_server: &str) -> String {
    config(&format!(
        "upstreams:\n{}models:\n  - {{name: m, deployments: [{{upstream: a, model: m}}]}}\n",
        upstream("a", mock)
    ))
    .replace(
        "listen: \"127.0.0.1:{PORT}\"}",
        &format!(
            "listen: \"127.0.0.1:{{PORT}}\", tls: {{cert: \"{}\", key: \"{}\"}}}}",
            cert.display(),
            key.display()
        ),
    )
    .replace("  threads: 2\n", &format!("  threads: 2\n{extra_server}"))
}

/// A client that trusts only `cert`; `http1` forces HTTP/1.1 (ALPN offers only it).
fn trusting(cert: &Path, http1: bool) -> reqwest::Client {
    let pem = std::fs::read(cert).unwrap();
    let b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(10));
    let b = if http1 { b.http1_only() } else { b };
    b.build().unwrap()
}

async fn chat(c: &reqwest::Client, port: u16, stream: bool) -> reqwest::Result<reqwest::Response> {
    c.post(format!("https://localhost:{port}/v1/chat/completions"))
        .json(&json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
}

#[tokio::test]
async fn https_with_http2_by_alpn_and_http1_on_request() {
    let mock = Mock::start("A");
    let (cert, key) = self_signed_cert("a");
    let (gw, _log) = gateway_with_log_admin_ready(&tls_config(&mock, &cert, &key, ""), &[]).await;

    // HTTP/2 when the client offers it.
    let h2 = trusting(&cert, false);
    let r = chat(&h2, gw.port, false).await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["choices"][0]["message"]["content"].is_string(),
        "{body}"
    );
    // A stream over HTTP/2, complete.
    let r = chat(&h2, gw.port, true).await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let text = r.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    // By address too (the certificate names 127.0.0.1).
    let r = h2
        .get(format!("https://127.0.0.1:{}/v1/models", gw.port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // HTTP/1.1 when that is all the client speaks.
    let h1 = trusting(&cert, true);
    let r = chat(&h1, gw.port, false).await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);

    // Plain HTTP on the TLS port is not served.
    let plain = client()
        .get(format!("http://127.0.0.1:{}/v1/models", gw.port))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
}

#[tokio::test]
async fn certificates_are_re_read_on_sighup_and_open_connections_stay() {
    let mock = Mock::start("A");
    let (cert, key) = self_signed_cert("live");
    // Keep the first certificate aside: the client of the open connection trusts only it.
    let (old_cert, _) = self_signed_cert("unused");
    std::fs::copy(&cert, &old_cert).unwrap();
    let template = tls_config(&mock, &cert, &key, "").replace("level: warn", "level: info");
    let (gw, log) = gateway_with_log_admin_ready(&template, &[]).await;

    let old_client = trusting(&old_cert, false);
    let r = chat(&old_client, gw.port, false).await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, reqwest::Version::HTTP_2)
    );

    // New certificate and key in the same files, then SIGHUP.
    let (new_cert, new_key) = self_signed_cert("next");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    gw.signal(libc::SIGHUP);

    // A new connection soon presents the new certificate: a client trusting only it gets in.
    let start = Instant::now();
    loop {
        let fresh = trusting(&new_cert, false);
        if chat(&fresh, gw.port, false)
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the new certificate was not served:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ... and a new connection of a client trusting only the old one is refused.
    assert!(chat(&trusting(&old_cert, false), gw.port, false)
        .await
        .is_err());
    // The HTTP/2 connection opened before the reload still works (a reconnect would fail: this
    // client does not trust the new certificate).
    for stream in [false, true] {
        let r = chat(&old_client, gw.port, stream).await.unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await.unwrap();
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("1 TLS certificates re-read"), "{text}");

    // A broken key file fails the reload; the current certificate stays.
    std::fs::write(&key, "not a key").unwrap();
    let admin = client().post(gw.admin("/reload")).send().await.unwrap();
    let status = admin.status();
    let body = admin.text().await.unwrap();
    assert!(!status.is_success(), "{body}");
    assert!(body.contains("server.listeners[0].tls"), "{body}");
    let r = chat(&trusting(&new_cert, false), gw.port, false)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn check_reports_unreadable_or_mismatched_certificates() {
    let (cert, key) = self_signed_cert("c");
    let (_, other_key) = self_signed_cert("d");
    let garbage = tmp_path("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN NONSENSE-----\n").unwrap();
    let run = |cert: &Path, key: &Path| {
        let path = tmp_path("tls-check.yaml");
        std::fs::write(
            &path,
            format!(
                "server: {{listeners: [{{name: main, listen: \"127.0.0.1:4443\", tls: {{cert: \"{}\", key: \"{}\"}}}}]}}\nupstreams: [{{name: a, url: \"http://127.0.0.1:1/v1\"}}]\nmodels: [{{name: m, deployments: [{{upstream: a, model: m}}]}}]\n",
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        let out = std::process::Command::new(LLMPROXY)
            .args(["check", "-c", path.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, text) = run(&cert, &key);
    assert_eq!(code, Some(0), "{text}");
    for (c, k, needle) in [
        (
            cert.as_path(),
            Path::new("/nonexistent/key.pem"),
            "cannot read",
        ),
        (garbage.as_path(), key.as_path(), "PEM"),
        (cert.as_path(), other_key.as_path(), "does not fit"),
    ] {
        let (code, text) = run(c, k);
        assert_eq!(code, Some(1), "{text}");
        assert!(text.contains("server.listeners[0].tls"), "{text}");
        assert!(text.contains(needle), "{needle}: {text}");
    }
}

/// HAProxy in TCP mode with `send-proxy-v2` in front of a TLS listener: the header comes before
/// the TLS handshake (Pingora's pre-TLS hook), and the access log names the real client.
#[tokio::test]
async fn proxy_protocol_in_front_of_tls() {
    let mock = Mock::start("A");
    let (cert, key) = self_signed_cert("pp");
    let template = tls_config(
        &mock,
        &cert,
        &key,
        "  proxy_protocol: true\n  trusted_proxies: [\"127.0.0.1/32\"]\n",
    )
    .replace("access_log: off", "access_log: json")
    .replace("level: warn", "level: info");
    let (gw, log) = gateway_with_log_admin_ready(&template, &[]).await;
    let front = free_port();
    let _haproxy = Haproxy::start(
        &format!(
            "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\nfrontend f\n  bind 127.0.0.1:{front}\n  default_backend b\nbackend b\n  server g 127.0.0.1:{} send-proxy-v2\n",
            gw.port
        ),
        &[front],
    )
    .await;
    let pem = std::fs::read(&cert).unwrap();
    let c = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .local_address(std::net::IpAddr::from([127, 0, 0, 5]))
        .build()
        .unwrap();
    for version in ["first", "second"] {
        let r = c
            .get(format!("https://localhost:{front}/v1/models"))
            .header("x-request-id", format!("tls-pp-{version}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        let line = wait_for_line(&log, &format!("tls-pp-{version}")).await;
        assert!(line.contains("\"client\":\"127.0.0.5\""), "{line}");
    }
    // Straight to the TLS port without a header: refused.
    let direct = trusting(&cert, false)
        .get(format!("https://localhost:{}/v1/models", gw.port))
        .send()
        .await;
    assert!(direct.is_err());
}
