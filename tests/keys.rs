//! Issue: keys, auth and spend, through the real gateway: the auth matrix, key management on the
//! listener, per-key aliases and scope, spend priced exactly, budget exhaustion, secrets never
//! leaking — against SQLite and a real PostgreSQL — and two instances on one PostgreSQL.
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
use std::time::{Duration, Instant};

const MASTER: &str = "sk-master-test-0123456789";

/// (header, model, expected status, expected error code).
type Case<'a> = ((&'a str, String), &'a str, u16, Option<&'a str>);

fn keyed_config(mock: &Mock, database: &str, extra_listener: &str) -> String {
    config(&format!(
        "state: {{database: \"{database}\", key_refresh: 200ms}}\nupstreams:\n{}models:\n  - {{name: m, pricing: {{input_per_mtok: 2.5, output_per_mtok: 10}}, deployments: [{{upstream: a, model: gpt-4o-mini}}]}}\n  - {{name: other, deployments: [{{upstream: a, model: gpt-4o-mini}}]}}\n",
        upstream("a", mock)
    ))
    .replace(
        "  threads: 2\n",
        &format!("  threads: 2\n  master_key: \"{MASTER}\"\n"),
    )
    .replace(
        "listeners: [{name: main, listen: \"127.0.0.1:{PORT}\"}]",
        &format!("listeners: [{{name: main, listen: \"127.0.0.1:{{PORT}}\"}}{extra_listener}]"),
    )
}

async fn call(gw: &Gateway, header: (&str, String), model: &str) -> reqwest::Response {
    client()
        .post(gw.url("/v1/chat/completions"))
        .header(header.0, header.1)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

fn bearer(k: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {k}"))
}

async fn admin_call(gw: &Gateway, method: &str, path: &str, body: Value) -> (u16, Value) {
    let c = client();
    let url = gw.url(path);
    let r = match method {
        "GET" => c.get(url),
        _ => c.post(url).json(&body),
    }
    .header("authorization", format!("Bearer {MASTER}"))
    .send()
    .await
    .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn generate(gw: &Gateway, body: Value) -> String {
    let (status, v) = admin_call(gw, "POST", "/key/generate", body).await;
    assert_eq!(status, 200, "{v}");
    let k = v["key"].as_str().unwrap().to_string();
    assert!(k.starts_with("sk-") && k.len() >= 24, "{k}");
    k
}

/// The whole suite against one database URL.
async fn suite(database: &str) {
    let mock = Mock::start("A");
    let narrow_port = free_port();
    let (gw, log) = gateway_with_log(
        &keyed_config(
            &mock,
            database,
            &format!(", {{name: narrow, listen: \"127.0.0.1:{narrow_port}\", models: [other]}}"),
        )
        .replace(
            "level: warn, access_log: off",
            "level: info, access_log: json",
        ),
        &[],
    )
    .await;

    let full = generate(&gw, json!({})).await;
    let scoped = generate(
        &gw,
        json!({"models": ["other"], "aliases": {"gpt-3.5-turbo": "other"}}),
    )
    .await;
    let expiring = generate(&gw, json!({"duration": "1s"})).await;
    let deleted = generate(&gw, json!({})).await;
    let (s, v) = admin_call(&gw, "POST", "/key/delete", json!({"keys": [deleted]})).await;
    assert_eq!(s, 200, "{v}");

    // --- the auth matrix: (header, model, status, code) ---
    let expired_wait = Instant::now();
    while expired_wait.elapsed() < Duration::from_millis(1100) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cases: Vec<Case> = vec![
        (("x-none", String::new()), "m", 401, Some("invalid_api_key")),
        (
            bearer("sk-wrong-key-000000000000"),
            "m",
            401,
            Some("invalid_api_key"),
        ),
        (bearer(&expiring), "m", 401, Some("invalid_api_key")),
        (bearer(&deleted), "m", 401, Some("invalid_api_key")),
        (bearer(&scoped), "m", 403, Some("model_not_allowed")),
        (bearer(&scoped), "other", 200, None),
        (bearer(&scoped), "gpt-3.5-turbo", 200, None), // the key's own alias
        (bearer(&full), "m", 200, None),
        (("x-api-key", full.clone()), "m", 200, None),
        (("api-key", full.clone()), "m", 200, None),
        (bearer(MASTER), "m", 200, None),
        (("x-api-key", MASTER.to_string()), "other", 200, None),
        (bearer(&full), "nope", 404, Some("model_not_found")),
    ];
    let mut unauthorised_successes = 0;
    for (h, model, status, code) in &cases {
        let r = call(&gw, h.clone(), model).await;
        let got = r.status().as_u16();
        if got == 200 && *status != 200 {
            unauthorised_successes += 1;
        }
        match code {
            Some(c) => {
                assert_openai_error(r, *status, c).await;
            }
            None => assert_eq!(got, *status, "{h:?} {model}"),
        }
    }
    assert_eq!(unauthorised_successes, 0);
    // The listener's scope holds for keys too.
    let r = client()
        .post(format!(
            "http://127.0.0.1:{narrow_port}/v1/chat/completions"
        ))
        .header("authorization", format!("Bearer {full}"))
        .json(&json!({"model": "m", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_openai_error(r, 403, "model_not_allowed").await;
    // /v1/models lists what the caller may use.
    let models: Value = client()
        .get(gw.url("/v1/models"))
        .header("authorization", format!("Bearer {scoped}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["other"]);
    // Key management needs the master key.
    let r = client()
        .post(gw.url("/key/generate"))
        .header("authorization", format!("Bearer {full}"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_openai_error(r, 403, "master_key_required").await;

    // --- spend: exactly the priced usage ---
    let spender = generate(&gw, json!({"max_budget": 0.0001})).await;
    let mut n = 0;
    // In micro-dollars, each request rounded once (halves up), as the gateway prices it.
    let mut expected_micros: u64 = 0;
    loop {
        let r = call(&gw, bearer(&spender), "m").await;
        if r.status() == 429 {
            assert_openai_error(r, 429, "budget_exceeded").await;
            break;
        }
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        let (p, c) = (
            v["usage"]["prompt_tokens"].as_u64().unwrap(),
            v["usage"]["completion_tokens"].as_u64().unwrap(),
        );
        // $2.50 and $10 per million tokens: 2.5 and 10 micro-dollars per token.
        expected_micros += (25 * p + 100 * c + 5) / 10;
        n += 1;
        assert!(n < 1000, "the budget never ran out");
        // A request's spend is booked once it has been answered: a client whose next request
        // goes out on a new connection at once can race the booking (CI saw 3 admitted for 2),
        // so the test waits (bounded) for it: the bound below is for requests sent after the
        // previous one's spend was booked (conf/README.md: "Overshoot bound").
        let want = expected_micros as f64 / 1e6;
        for _ in 0..500 {
            let (_, info) =
                admin_call(&gw, "GET", &format!("/key/info?key={spender}"), Value::Null).await;
            if info["info"]["spend"].as_f64().unwrap_or(0.0) >= want - 1e-12 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let expected = expected_micros as f64 / 1e6;
    // Sequential requests: the overshoot is at most the one request in flight when it was reached.
    let per_request = expected / n as f64;
    assert!(
        expected >= 0.0001 && expected < 0.0001 + per_request + 1e-12,
        "{expected} after {n}"
    );
    let t = Instant::now();
    let info = loop {
        let (s, info) =
            admin_call(&gw, "GET", &format!("/key/info?key={spender}"), Value::Null).await;
        assert_eq!(s, 200, "{info}");
        if (info["info"]["spend"].as_f64().unwrap() - expected).abs() < 1e-9 {
            break info;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "spend {info} != {expected}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "spend after {n} requests: {} (expected {expected})",
        info["info"]["spend"]
    );
    let m = gw.metrics().await;
    assert!(metric(&m, "llmproxy_spend_usd_total", &[("model", "m")]).unwrap() >= expected - 1e-12);

    // --- secrets never leak ---
    let (_, list) = admin_call(&gw, "GET", "/key/list", Value::Null).await;
    let config: Value = client()
        .get(gw.admin("/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let logs = std::fs::read_to_string(&log).unwrap();
    let upstream_seen = serde_json::to_string(&mock.requests().await).unwrap();
    for secret in [&full, &scoped, &spender, &MASTER.to_string()] {
        for (what, text) in [
            ("/key/list", list.to_string()),
            ("/config", config.to_string()),
            ("metrics", m.clone()),
            ("logs", logs.clone()),
            ("upstream requests", upstream_seen.clone()),
        ] {
            assert!(!text.contains(secret.as_str()), "a key leaked into {what}");
        }
    }
    assert!(
        logs.contains("\"key_id\":\"k"),
        "the access log names keys by id"
    );
}

#[tokio::test]
async fn keys_against_sqlite() {
    let db = tmp_path("keys.db");
    suite(&format!("sqlite://{}", db.display())).await;
}

#[tokio::test]
async fn keys_against_postgres() {
    let pg = Postgres::start();
    let url = pg.create_db("gateway_keys");
    suite(&url).await;
}

#[tokio::test]
async fn two_instances_on_one_postgres_see_keys_and_deletions() {
    let pg = Postgres::start();
    let url = pg.create_db("shared_keys");
    let mock = Mock::start("A");
    let g1 = gateway(&keyed_config(&mock, &url, "")).await;
    let g2 = gateway(&keyed_config(&mock, &url, "")).await;
    let k = generate(&g1, json!({})).await;
    // Visible on the other instance within the refresh bound (200 ms here, 5 s by default).
    let t = Instant::now();
    while call(&g2, bearer(&k), "m").await.status() != 200 {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "g2 never saw the new key"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen_after = t.elapsed();
    let (s, _) = admin_call(&g1, "POST", "/key/delete", json!({"keys": [k]})).await;
    assert_eq!(s, 200);
    assert_eq!(
        call(&g1, bearer(&k), "m").await.status(),
        401,
        "refused at once where deleted"
    );
    let t = Instant::now();
    while call(&g2, bearer(&k), "m").await.status() != 401 {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "g2 kept accepting a deleted key"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "new key seen by the other instance after {seen_after:?}, deletion after {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn without_a_master_key_auth_is_off() {
    let mock = Mock::start("A");
    let gw = gateway(&config(&format!(
        "upstreams:\n{}models:\n  - {{name: m, deployments: [{{upstream: a, model: m}}]}}\n",
        upstream("a", &mock)
    )))
    .await;
    assert_eq!(
        call(&gw, ("x-none", String::new()), "m").await.status(),
        200
    );
    let r = client()
        .post(gw.url("/key/generate"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_openai_error(r, 404, "not_found").await;
}

#[tokio::test]
async fn a_master_key_added_by_reload_is_enforced_at_once() {
    let mock = Mock::start("A");
    let gw = gateway(&config(&format!(
        "upstreams:\n{}models:\n  - {{name: m, deployments: [{{upstream: a, model: m}}]}}\n",
        upstream("a", &mock)
    )))
    .await;
    assert_eq!(
        call(&gw, ("x-none", String::new()), "m").await.status(),
        200
    );
    let text = std::fs::read_to_string(&gw.config).unwrap();
    std::fs::write(
        &gw.config,
        text.replace(
            "  threads: 2\n",
            &format!("  threads: 2\n  master_key: \"{MASTER}\"\n"),
        ),
    )
    .unwrap();
    gw.signal(libc::SIGHUP);
    let t = Instant::now();
    while call(&gw, ("x-none", String::new()), "m").await.status() != 401 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the reloaded master key was not enforced"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(call(&gw, bearer(MASTER), "m").await.status(), 200);
    // Virtual keys need the database, opened at the next start: any other key is refused.
    let r = call(&gw, bearer("sk-some-other-key-0000000000"), "m").await;
    assert_openai_error(r, 401, "invalid_api_key").await;
}
