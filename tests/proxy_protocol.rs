//! Issue 10, scale-out: HAProxy in TCP mode (`send-proxy-v2`) in front of two llmproxy instances
//! sharing one Redis. The client-IP limit and the access log see the real client address (not
//! HAProxy's), the global rate limit holds across both instances, and connections that cannot be
//! believed (no PROXY header, or from a peer outside `trusted_proxies`) are closed unanswered.
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
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One instance behind the balancer: PROXY protocol from 127.0.0.1 only, a client-IP limit, the
/// shared Redis budget, a JSON access log.
fn instance(redis: &Redis, mock: &Mock) -> String {
    format!(
        "server:\n  listeners: [{{name: main, listen: \"127.0.0.1:{{PORT}}\", client_ratelimit: {{per_second: 5, burst: 10}}}}]\n  threads: 2\n  proxy_protocol: true\n  trusted_proxies: [\"127.0.0.1/32\"]\nadmin: {{listen: \"127.0.0.1:{{ADMIN}}\"}}\nlogging: {{level: info, access_log: json}}\nstate: {{redis: \"{}\"}}\nupstreams:\n{}models:\n  - {{name: m, queue: {{max_size: 40, max_wait: 5s}}, deployments: [{{upstream: a, model: gpt-4o-mini, rpm: 600}}]}}\n",
        redis.url(),
        openai_upstream("a", mock)
    )
}

/// A client that connects from `ip` (any 127.0.0.0/8 address is local on Linux).
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(ip))
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

fn chat() -> Value {
    json!({"model": "m", "messages": [], "max_tokens": 5})
}

/// `n` concurrent chat requests from `client` to `url`; their statuses.
async fn burst(client: &reqwest::Client, url: &str, n: usize, tag: &str) -> Vec<u16> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let (client, url) = (client.clone(), url.to_string());
        let id = format!("{tag}-{i}");
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .header("x-request-id", &id)
                .json(&chat())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let _ = r.bytes().await;
            status
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn count(codes: &[u16], code: u16) -> usize {
    codes.iter().filter(|c| **c == code).count()
}

/// HAProxy with three TCP frontends: `first` → instance 1 only (exact per-IP arithmetic: client
/// buckets are per instance), `sticky` → both by source address (the reference deployment), `spread`
/// → both in turn (each client's requests land on both instances). Health checks ask the admin
/// listener's `/health`, without a PROXY header (`port` given).
fn haproxy_cfg(fronts: [u16; 3], g: [(u16, u16); 2]) -> String {
    let server = |name: &str, (port, admin): (u16, u16)| {
        format!(
            "  server {name} 127.0.0.1:{port} send-proxy-v2 check port {admin} inter 500ms rise 1 fall 2\n"
        )
    };
    format!(
        "global\n  maxconn 2000\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n  option httpchk GET /health\n\
         frontend first\n  bind 127.0.0.1:{}\n  default_backend first\n\
         frontend sticky\n  bind 127.0.0.1:{}\n  default_backend sticky\n\
         frontend spread\n  bind 127.0.0.1:{}\n  default_backend spread\n\
         backend first\n{}\
         backend sticky\n  balance source\n{}{}\
         backend spread\n  balance roundrobin\n{}{}",
        fronts[0],
        fronts[1],
        fronts[2],
        server("g1", g[0]),
        server("g1", g[0]),
        server("g2", g[1]),
        server("g1", g[0]),
        server("g2", g[1]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn haproxy_two_instances_and_redis_real_client_addresses_and_one_global_limit() {
    let redis = Redis::start();
    let mock = Mock::start_with("A", &["--no-record", "--rpm", "600"]);
    let (g1, log1) = gateway_with_log_admin_ready(&instance(&redis, &mock), &[]).await;
    let (g2, log2) = gateway_with_log_admin_ready(&instance(&redis, &mock), &[]).await;
    let fronts = [free_port(), free_port(), free_port()];
    let _haproxy = Haproxy::start(
        &haproxy_cfg(fronts, [(g1.port, g1.admin_port), (g2.port, g2.admin_port)]),
        &fronts,
    )
    .await;
    let url = |port: u16| format!("http://127.0.0.1:{port}/v1/chat/completions");

    // (a) 20 concurrent requests from each of two client addresses, through HAProxy (whose own
    // address, 127.0.0.1, is all the gateway's TCP peer shows): each address gets its own burst of
    // 10. Limited by HAProxy's address instead, the two would share one bucket: 10 in all.
    let (c2, c3) = (client_from([127, 0, 0, 2]), client_from([127, 0, 0, 3]));
    let first = url(fronts[0]);
    let (codes2, codes3) = tokio::join!(
        burst(&c2, &first, 20, "from-2"),
        burst(&c3, &first, 20, "from-3")
    );
    eprintln!("127.0.0.2: {codes2:?}\n127.0.0.3: {codes3:?}");
    for codes in [&codes2, &codes3] {
        assert_eq!(count(codes, 200), 10, "{codes:?}");
        assert_eq!(count(codes, 429), 10, "{codes:?}");
    }

    // (b) The access log names the real client.
    for (tag, ip) in [("from-2", "127.0.0.2"), ("from-3", "127.0.0.3")] {
        let line = wait_for_line(&log1, &format!("\"request_id\":\"{tag}-")).await;
        let json: Value =
            serde_json::from_str(line.split_once("] ").map(|x| x.1).unwrap_or(&line)).unwrap();
        assert_eq!(json["client"], ip, "{line}");
    }
    let text = std::fs::read_to_string(&log1).unwrap();
    assert!(!text.contains("\"client\":\"127.0.0.1\""), "{text}");

    // The reference deployment's `balance source`: a client sticks to one instance, so its limit
    // is exact there too.
    let c4 = client_from([127, 0, 0, 4]);
    let codes4 = burst(&c4, &url(fronts[1]), 20, "from-4").await;
    assert_eq!(count(&codes4, 200), 10, "{codes4:?}");

    // (c) ~3× the upstream's 10 req/s for 10 s, from 10 client addresses (3 req/s each, under their
    // own limit), spread over both instances: together they keep to the shared budget — the mock
    // never answers 429 — and use it (≥ 95%).
    tokio::time::sleep(Duration::from_secs(2)).await; // the queue of (a) has drained
    mock.reset().await;
    let run = Duration::from_secs(10);
    let start = Instant::now();
    let mut senders = Vec::new();
    for k in 0..10u8 {
        let (client, url) = (client_from([127, 0, 0, 10 + k]), url(fronts[2]));
        senders.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / 3.0));
            let mut tasks = Vec::new();
            while start.elapsed() < run {
                tick.tick().await;
                let (client, url) = (client.clone(), url.clone());
                tasks.push(tokio::spawn(async move {
                    let r = client.post(url).json(&chat()).send().await.unwrap();
                    let s = r.status().as_u16();
                    let _ = r.bytes().await;
                    s
                }));
            }
            let mut codes = Vec::new();
            for t in tasks {
                codes.push(t.await.unwrap());
            }
            codes
        }));
    }
    let mut codes = Vec::new();
    for s in senders {
        codes.extend(s.await.unwrap());
    }
    eprintln!(
        "spread load: {} sent, {} ok, {} refused by the gateway's queue, other {:?}",
        codes.len(),
        count(&codes, 200),
        count(&codes, 429),
        codes
            .iter()
            .filter(|c| **c != 200 && **c != 429)
            .collect::<Vec<_>>()
    );
    assert!(codes.iter().all(|c| *c == 200 || *c == 429), "{codes:?}");
    let stats = mock.stats().await;
    assert_eq!(stats["rate_limited"], 0, "the upstream said 429: {stats}");
    let admissions = mock.admissions().await;
    let t0 = admissions[0]["t_ms"].as_u64().unwrap();
    let served = admissions
        .iter()
        .filter(|a| a["t_ms"].as_u64().unwrap() < t0 + run.as_millis() as u64)
        .count();
    let utilisation = served as f64 / (10.0 * run.as_secs_f64());
    eprintln!(
        "HAProxy + 2 instances + Redis: upstream utilisation {:.1}% ({served} in {run:?})",
        utilisation * 100.0
    );
    assert!(utilisation >= 0.95, "utilisation {utilisation}");
    // Both instances carried the load, and no client address was limited in this phase.
    for (g, log) in [(&g1, &log1), (&g2, &log2)] {
        let m = g.metrics().await;
        let handled = std::fs::read_to_string(log)
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"client\":\"127.0.0.1"))
            .count();
        assert!(handled > 0, "an instance served none of the spread load");
        assert_eq!(
            metric(&m, "llmproxy_state_errors_total", &[("backend", "redis")]).unwrap_or(0.0),
            0.0
        );
    }
}

/// A raw connection from `from` that sends `bytes` and reads until the gateway closes it.
async fn raw_exchange(from: Ipv4Addr, to: u16, bytes: &[u8]) -> Vec<u8> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from.into(), 0)).unwrap();
    let mut s = socket
        .connect(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), to))
        .await
        .unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the gateway neither answered nor closed")
        .ok();
    out
}

#[tokio::test]
async fn connections_without_a_header_or_from_untrusted_peers_are_closed_unanswered() {
    let mock = Mock::start("A");
    let template = config(&format!(
        "upstreams:\n{}models:\n  - {{name: m, deployments: [{{upstream: a, model: m}}]}}\n",
        upstream("a", &mock)
    ))
    .replace(
        "  threads: 2\n",
        "  threads: 2\n  proxy_protocol: true\n  trusted_proxies: [\"127.0.0.1/32\"]\n",
    )
    .replace("access_log: off", "access_log: json")
    .replace("level: warn", "level: info");
    let (gw, log) = gateway_with_log_admin_ready(&template, &[]).await;
    let request =
        "GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-request-id: {ID}\r\n\r\n";
    let header = format!("PROXY TCP4 203.0.113.9 127.0.0.1 5555 {}\r\n", gw.port);

    // From a trusted peer without the header: closed, nothing answered.
    let out = raw_exchange(
        Ipv4Addr::LOCALHOST,
        gw.port,
        request.replace("{ID}", "no-header").as_bytes(),
    )
    .await;
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));

    // A valid header from a peer outside trusted_proxies: closed, nothing answered.
    let spoofed = format!("{header}{}", request.replace("{ID}", "untrusted"));
    let out = raw_exchange(Ipv4Addr::new(127, 0, 0, 2), gw.port, spoofed.as_bytes()).await;
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));

    // v1 from the trusted peer: served, and logged as the announced client.
    let good = format!("{header}{}", request.replace("{ID}", "trusted-v1"));
    let out = raw_exchange(Ipv4Addr::LOCALHOST, gw.port, good.as_bytes()).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let line = wait_for_line(&log, "trusted-v1").await;
    assert!(line.contains("\"client\":\"203.0.113.9\""), "{line}");

    // v2 (as HAProxy's send-proxy-v2 writes it), with keep-alive: two requests one after the other
    // on the connection, after one header.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[198, 51, 100, 7, 127, 0, 0, 1, 0x30, 0x39]);
    v2.extend_from_slice(&gw.port.to_be_bytes());
    v2.extend_from_slice(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nx-request-id: v2-a\r\n\r\n");
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    s.write_all(&v2).await.unwrap();
    let mut first = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&first).contains("\"object\":\"list\"}") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&first));
        first.extend_from_slice(&buf[..n]);
    }
    assert!(first.starts_with(b"HTTP/1.1 200"));
    s.write_all(
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-request-id: v2-b\r\n\r\n",
    )
    .await
    .unwrap();
    let mut second = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut second))
        .await
        .unwrap()
        .unwrap();
    assert!(
        second.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&second)
    );
    for id in ["v2-a", "v2-b"] {
        let line = wait_for_line(&log, id).await;
        assert!(line.contains("\"client\":\"198.51.100.7\""), "{line}");
    }
    let all = std::fs::read_to_string(&log).unwrap();
    assert!(
        !all.contains("no-header") && !all.contains("\"untrusted"),
        "{all}"
    );
    assert!(all.contains("is not in server.trusted_proxies"), "{all}");
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_trusted_proxies() {
    let mock = Mock::start("A");
    let template = config(&format!(
        "upstreams:\n{}models:\n  - {{name: m, deployments: [{{upstream: a, model: m}}]}}\n",
        upstream("a", &mock)
    ))
    .replace(
        "  threads: 2\n",
        "  threads: 2\n  trusted_proxies: [\"127.0.0.1/32\", \"10.0.0.0/8\"]\n",
    )
    .replace("access_log: off", "access_log: json")
    .replace("level: warn", "level: info");
    let (gw, log) = gateway_with_log(&template, &[]).await;
    let send = |from: [u8; 4], xff: &'static str, id: &'static str| {
        let url = gw.url("/v1/models");
        async move {
            let r = client_from(from)
                .get(url)
                .header("x-forwarded-for", xff)
                .header("x-request-id", id)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    // From the trusted 127.0.0.1: the right-most untrusted hop (a client-written left part loses).
    send(
        [127, 0, 0, 1],
        "1.2.3.4, 203.0.113.50, 10.1.1.1",
        "xff-trusted",
    )
    .await;
    // From 127.0.0.2 (untrusted): the header is ignored.
    send([127, 0, 0, 2], "203.0.113.51", "xff-untrusted").await;
    let line = wait_for_line(&log, "xff-trusted").await;
    assert!(line.contains("\"client\":\"203.0.113.50\""), "{line}");
    let line = wait_for_line(&log, "xff-untrusted").await;
    assert!(line.contains("\"client\":\"127.0.0.2\""), "{line}");
}

#[test]
fn reference_haproxy_config_is_valid_and_check_accepts_the_scale_out_config() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new(HAPROXY)
        .args(["-c", "-f", &format!("{root}/conf/haproxy.cfg")])
        .output()
        .expect("haproxy");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(LLMPROXY)
        .args(["check", "-c", &format!("{root}/conf/scale-out.yaml")])
        .env("OPENAI_API_KEY", "sk-test")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Bad values are reported with their key paths.
    let path = tmp_path("bad-trust.yaml");
    std::fs::write(
        &path,
        "server: {listeners: [{name: main, listen: \"127.0.0.1:4000\"}], proxy_protocol: yes-please, trusted_proxies: [\"10.0.0.0/33\", \"lb.internal\"]}\nupstreams: [{name: a, url: \"http://127.0.0.1:1/v1\"}]\nmodels: [{name: m, deployments: [{upstream: a, model: m}]}]\n",
    )
    .unwrap();
    let out = std::process::Command::new(LLMPROXY)
        .args(["check", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    for needle in [
        "server.proxy_protocol",
        "server.trusted_proxies[0]",
        "server.trusted_proxies[1]",
    ] {
        assert!(text.contains(needle), "{needle} missing in:\n{text}");
    }
}

/// The rest of the scale-out promise: behind HAProxy (round robin), two instances share one Redis
/// (cache) and one PostgreSQL (keys): a key made through either is accepted by both, a deletion
/// is honoured by both within `key_refresh`, and an answer cached by one is a hit on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn haproxy_two_instances_share_cache_and_keys() {
    let redis = Redis::start();
    let pg = Postgres::start();
    let db = pg.create_db("scaleout");
    let mock = Mock::start("A");
    let master = "sk-scale-out-master-000";
    let cfg = format!(
        "server:\n  listeners: [{{name: main, listen: \"127.0.0.1:{{PORT}}\"}}]\n  threads: 2\n  proxy_protocol: true\n  trusted_proxies: [\"127.0.0.1/32\"]\n  master_key: \"{master}\"\nadmin: {{listen: \"127.0.0.1:{{ADMIN}}\"}}\nlogging: {{level: warn, access_log: off}}\nstate: {{redis: \"{}\", database: \"{db}\", key_refresh: 200ms}}\ncache: {{backend: redis}}\nupstreams:\n{}models:\n  - {{name: m, cache: {{ttl: 1h}}, deployments: [{{upstream: a, model: gpt-4o-mini}}]}}\n",
        redis.url(),
        openai_upstream("a", &mock)
    );
    let (g1, _) = gateway_with_log_admin_ready(&cfg, &[]).await;
    let (g2, _) = gateway_with_log_admin_ready(&cfg, &[]).await;
    let fronts = [free_port(), free_port(), free_port()];
    let _haproxy = Haproxy::start(
        &haproxy_cfg(fronts, [(g1.port, g1.admin_port), (g2.port, g2.admin_port)]),
        &fronts,
    )
    .await;
    let base = format!("http://127.0.0.1:{}", fronts[2]);
    // Fresh connections, so round robin alternates instances request by request.
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let gen: Value = c
        .post(format!("{base}/key/generate"))
        .header("authorization", format!("Bearer {master}"))
        .json(&json!({"models": ["m"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = gen["key"].as_str().unwrap().to_string();
    let ask = |body: Value| {
        let (c, url, key) = (
            c.clone(),
            format!("{base}/v1/chat/completions"),
            key.clone(),
        );
        async move {
            let r = c
                .post(url)
                .header("authorization", format!("Bearer {key}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let cache = r
                .headers()
                .get("x-llmproxy-cache")
                .map(|v| v.to_str().unwrap().to_string());
            (status, cache)
        }
    };
    // The key works on both instances (four in a row through round robin) within the bound.
    let t = Instant::now();
    let mut streak = 0;
    while streak < 4 {
        let (s, _) = ask(json!({"model": "m", "messages": [], "temperature": 0.5})).await;
        streak = if s == 200 { streak + 1 } else { 0 };
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the key never worked on both instances"
        );
    }
    // One upstream call for a deterministic request, whichever instance answers.
    mock.reset().await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "shared"}], "temperature": 0});
    let mut results = Vec::new();
    for _ in 0..4 {
        results.push(ask(body.clone()).await);
    }
    assert!(results.iter().all(|r| r.0 == 200), "{results:?}");
    assert_eq!(
        results
            .iter()
            .filter(|r| r.1.as_deref() == Some("hit"))
            .count(),
        3,
        "{results:?}"
    );
    assert_eq!(mock.requests_to("/v1/chat/completions").await.len(), 1);
    // Deleted through one instance: refused by both within the bound.
    let del = c
        .post(format!("{base}/key/delete"))
        .header("authorization", format!("Bearer {master}"))
        .json(&json!({"keys": [key]}))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    let t = Instant::now();
    let mut streak = 0;
    while streak < 4 {
        let (s, _) = ask(json!({"model": "m", "messages": [], "temperature": 0.5})).await;
        streak = if s == 401 { streak + 1 } else { 0 };
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "a deleted key kept working"
        );
    }
    eprintln!(
        "deleted key refused by both instances after {:?}",
        t.elapsed()
    );
}
