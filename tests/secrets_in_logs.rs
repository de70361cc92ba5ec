//! No credential in any log line at any level: a gateway at `RUST_LOG=trace` serves requests of
//! every provider and upstream auth type (bearer, basic, a custom auth header, secret header ops, an
//! outbound proxy with a password, a Redis password, the master key and a virtual key), and its
//! whole log is searched for each secret. A database password in a failed start is masked too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test stops at the first surprise and prints what it measured"
)]

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

const MASTER: &str = "master-SECRET8-0123456789";

#[tokio::test]
async fn no_secret_reaches_the_log_at_trace_level() {
    // This file holds one test, so setting the variable for the gateways it spawns races nothing.
    std::env::set_var("RUST_LOG", "trace");
    let (a, b, c, d, e) = (
        Mock::start("A"),
        Mock::start("B"),
        Mock::start("C"),
        Mock::start("D"),
        Mock::start("E"),
    );
    let redis = Redis::start();
    let db = tmp_path("secrets.db");
    let health = "health_check: {interval: 200ms, timeout: 1s}";
    let rest = format!(
        "state: {{database: \"sqlite://{db}\", redis: \"redis://:redis-SECRET9@127.0.0.1:{rport}/0\"}}\n\
cache: {{backend: redis}}\n\
upstreams:\n\
  - {{name: oa, provider: openai, url: \"{a}\", auth: {{type: bearer, token: sk-openai-SECRET1}}, {health}}}\n\
  - {{name: az, provider: azure, url: \"{b}\", api_version: \"2024-10-21\", auth: {{type: header, name: api-key, value: az-SECRET2}}, {health}}}\n\
  - {{name: an, provider: anthropic, url: \"{c}\", auth: {{type: header, name: x-api-key, value: ant-SECRET3}}, {health}}}\n\
  - {{name: basic, provider: openai_compatible, url: \"{d}\", auth: {{type: basic, username: bob, password: basic-SECRET4}}, headers: [{{op: insert, key: X-Vendor-Token, value: vendor-SECRET5}}, {{op: insert, key: X-Opaque, value: opaque-SECRET6, secret: true}}], {health}}}\n\
  - {{name: custom, provider: openai_compatible, url: \"{e}\", auth: {{type: header, name: x-custom-auth, value: custom-SECRET7}}, {health}}}\n\
  - {{name: proxied, provider: openai_compatible, url: \"http://127.0.0.1:9/v1\", client: {{proxy: \"http://puser:proxy-SECRET10@127.0.0.1:9\", connect_timeout: 200ms}}, auth: {{type: bearer, token: proxied-SECRET12}}, {health}}}\n\
models:\n\
  - {{name: m-oa, cache: {{ttl: 1m}}, deployments: [{{upstream: oa, model: gpt-4o-mini}}]}}\n\
  - {{name: m-az, deployments: [{{upstream: az, model: dep}}]}}\n\
  - {{name: m-an, deployments: [{{upstream: an, model: claude-sonnet-4-5}}]}}\n\
  - {{name: m-basic, deployments: [{{upstream: basic, model: llama}}]}}\n\
  - {{name: m-custom, deployments: [{{upstream: custom, model: qwen}}]}}\n\
  - {{name: m-proxied, retry: {{attempts: 1}}, deployments: [{{upstream: proxied, model: x}}]}}\n\
routes:\n\
  - {{prefix: /openai, upstream: oa}}\n",
        db = db.display(),
        rport = redis.port,
        a = a.url(),
        b = b.base(),
        c = c.url(),
        d = d.url(),
        e = e.url(),
    );
    let yaml = config(&rest)
        .replace(
            "  threads: 2\n",
            &format!("  threads: 2\n  master_key: \"{MASTER}\"\n"),
        )
        .replace(
            "level: warn, access_log: off",
            "level: trace, access_log: json",
        );
    let (gw, log) = gateway_with_log(&yaml, &[]).await;
    std::env::remove_var("RUST_LOG");

    let r = client()
        .post(gw.url("/key/generate"))
        .header("authorization", format!("Bearer {MASTER}"))
        .json(&json!({"routes": ["/openai"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let vkey = r.json::<serde_json::Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();

    for key in [MASTER, vkey.as_str()] {
        for model in ["m-oa", "m-az", "m-an", "m-basic", "m-custom", "m-proxied"] {
            for stream in [false, true] {
                let r = client()
                    .post(gw.url("/v1/chat/completions"))
                    .header("authorization", format!("Bearer {key}"))
                    .json(&json!({"model": model, "stream": stream, "temperature": 0,
                        "messages": [{"role": "user", "content": "hi"}]}))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let _ = r.bytes().await;
                if model != "m-proxied" {
                    assert_eq!(status, 200, "{model} stream={stream}");
                }
            }
        }
        let r = client()
            .post(gw.url("/v1/messages"))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": "m-an", "max_tokens": 16,
                "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = client()
            .get(gw.url("/openai/v1/models"))
            .header("authorization", format!("Bearer {key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Health checks (with each upstream's auth) have run more than once by now.
    gw.wait_upstreams(Duration::from_secs(10), |v| {
        v["healthy_endpoints"]
            .as_array()
            .is_some_and(|h| h.len() >= 5)
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("DEBUG llmproxy::exchange::attempt") && text.contains("upstream basic"),
        "the gateway logged its upstream requests (debug level is on)"
    );
    assert!(
        text.lines().count() > 100,
        "a trace-level run logs plenty: {} lines",
        text.lines().count()
    );
    // The base64 form of the basic credentials is a secret as well.
    let basic = base64_basic("bob", "basic-SECRET4");
    let secrets = [
        "SECRET1",
        "SECRET2",
        "SECRET3",
        "SECRET4",
        "SECRET5",
        "SECRET6",
        "SECRET7",
        "SECRET8",
        "SECRET9",
        "SECRET10",
        "SECRET12",
        basic.as_str(),
        vkey.as_str(),
        &vkey[3..15],
    ];
    for s in secrets {
        if let Some(line) = text.lines().find(|l| l.contains(s)) {
            panic!("secret {s} in the log: {line:.400}");
        }
    }

    // A start that fails on the key database names it without its password.
    let bad = tmp_path("bad-db.yaml");
    std::fs::write(
        &bad,
        config(
            "state: {database: \"postgres://user:pg-SECRET11@127.0.0.1:9/db\"}\nupstreams: []\nmodels: []\n",
        )
        .replace("{PORT}", &free_port().to_string())
        .replace("{ADMIN}", &free_port().to_string())
        .replace(
            "  threads: 2\n",
            &format!("  threads: 2\n  master_key: \"{MASTER}\"\n"),
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(LLMPROXY)
            .args(["run", "-c", bad.to_str().unwrap()])
            .env("RUST_LOG", "trace")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("state.database"), "{all:.600}");
    assert!(!all.contains("SECRET11"), "{all:.2000}");
    assert!(!all.contains(MASTER), "{all:.2000}");
}

fn base64_basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
}
