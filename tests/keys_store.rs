//! Issue: keys, auth and spend — the key store and its in-memory view. The same suite runs against
//! SQLite (a temporary file) and a real PostgreSQL server the test starts itself.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test stops at the first surprise and prints what it measured"
)]

mod common;

use common::*;
use http::Method;
use llmproxy::keys::{self, Governed, KeyEntry, KeyError, Keys, KeysOptions};
use llmproxy::pricing::{self, Micros};
use serde_json::{json, Value};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Short intervals so that cross-view tests finish quickly.
fn fast() -> KeysOptions {
    KeysOptions {
        refresh: Duration::from_millis(200),
        flush: Duration::from_millis(100),
        ..KeysOptions::default()
    }
}

/// No background task unless a test starts one; long intervals so nothing happens by itself.
fn manual() -> KeysOptions {
    KeysOptions {
        refresh: Duration::from_secs(3600),
        flush: Duration::from_secs(3600),
        ..KeysOptions::default()
    }
}

/// Records `micros` of spend on a key alone (no team, no end user).
fn spend(keys: &Keys, e: &Arc<KeyEntry>, model: &str, micros: u64) {
    let who = Governed {
        key: Some(e.clone()),
        ..Governed::default()
    };
    keys.record_spend(&who, model, Micros(micros));
}

async fn call(keys: &Keys, method: Method, path: &str, body: Value) -> (u16, Value) {
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    keys::handle(keys, &method, path, query, &body).await
}

async fn generate(keys: &Keys, body: Value) -> (String, Value) {
    let (status, v) = call(keys, Method::POST, "/key/generate", body).await;
    assert_eq!(status, 200, "{v}");
    (v["key"].as_str().unwrap().to_string(), v)
}

async fn info(keys: &Keys, key: &str) -> Value {
    let (status, v) = call(
        keys,
        Method::GET,
        &format!("/key/info?key={key}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["key"], key);
    v["info"].clone()
}

fn assert_error(status: u16, v: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{v}");
    let e = &v["error"];
    assert!(e["message"].is_string(), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert!(e.get("param").is_some(), "{v}");
    assert_eq!(e["code"], code, "{v}");
}

/// Polls `f` every 20 ms until it holds, for at most `limit`.
async fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    loop {
        if f() {
            return t.elapsed();
        }
        assert!(t.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- the suite, one fn per case

async fn generate_and_authenticate(url: String) {
    let keys = Keys::open(&url, manual()).await.unwrap();
    let (secret, g) = generate(
        &keys,
        json!({"models": ["gpt-4o", "my-free-tier"], "aliases": {"gpt-3.5-turbo": "my-free-tier"},
               "duration": "30d", "max_budget": 10, "rpm": 60, "tpm": 1000, "metadata": {"team": "a"}}),
    )
    .await;
    assert!(
        secret.starts_with("sk-") && secret.len() >= 3 + 22,
        "{secret}"
    );
    let key_id = g["key_id"].as_str().unwrap().to_string();
    assert!(key_id.starts_with('k') && key_id.len() == 13, "{key_id}");
    let expires = g["expires"].as_str().unwrap();
    assert!(expires.ends_with('Z') && expires.len() == 20, "{expires}");

    let e = keys.authenticate(&secret).unwrap();
    assert_eq!(e.key_id(), key_id);
    assert_eq!(e.rpm(), Some(60));
    assert_eq!(e.tpm(), Some(1000));
    assert_eq!(e.resolve_model("gpt-3.5-turbo"), "my-free-tier");
    assert_eq!(e.resolve_model("gpt-4o"), "gpt-4o");
    assert!(e.allows_model("gpt-4o") && e.allows_model("my-free-tier"));
    assert!(!e.allows_model("o1"));

    assert_eq!(
        keys.authenticate("sk-wrong").unwrap_err(),
        KeyError::Unknown
    );
    assert_eq!(keys.authenticate("").unwrap_err(), KeyError::Unknown);
    let mut tampered = secret.clone();
    tampered.pop();
    tampered.push('!');
    assert_eq!(keys.authenticate(&tampered).unwrap_err(), KeyError::Unknown);

    let i = info(&keys, &secret).await;
    assert_eq!(i["spend"], 0.0);
    assert_eq!(i["expires"], expires);
    assert_eq!(i["models"], json!(["gpt-4o", "my-free-tier"]));
    assert_eq!(i["aliases"], json!({"gpt-3.5-turbo": "my-free-tier"}));
    assert_eq!(i["max_budget"], 10.0);
    assert_eq!(i["rpm"], 60);
    assert_eq!(i["tpm"], 1000);
    assert_eq!(i["metadata"], json!({"team": "a"}));
    assert_eq!(i["key_id"], key_id.as_str());
    // info also answers by key_id (what /key/list returns)
    assert_eq!(info(&keys, &key_id).await["key_id"], key_id.as_str());

    // The database holds the hash only, and a new view (a restart) authenticates the key.
    let stored = keys.store().load_all().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0].hash, secret);
    assert!(!format!("{stored:?}").contains(&secret[3..]));
    drop(keys);
    let again = Keys::open(&url, manual()).await.unwrap();
    assert_eq!(again.authenticate(&secret).unwrap().key_id(), key_id);

    // A key without limits allows every model and never expires.
    let (free, g) = generate(&again, Value::Null).await;
    assert_eq!(g["expires"], Value::Null);
    let e = again.authenticate(&free).unwrap();
    assert!(e.allows_model("anything"));
}

async fn expiry(url: String) {
    let keys = Keys::open(&url, manual()).await.unwrap();
    let (secret, _) = generate(&keys, json!({"duration": "1s"})).await;
    let (lasting, _) = generate(&keys, json!({"duration": "1h"})).await;
    // The key works until its second is over, then answers Expired (bounded: ≤ 1 s + rounding).
    let took = eventually(Duration::from_secs(4), "key expires", || {
        keys.authenticate(&secret).err() == Some(KeyError::Expired)
    })
    .await;
    assert!(took <= Duration::from_millis(2100), "{took:?}");
    assert!(keys.authenticate(&lasting).is_ok());
    assert_eq!(KeyError::Expired.status(), 401);
    assert_eq!(KeyError::Expired.code(), "invalid_api_key");
    // Extending it through update revives it; duration null removes the expiry.
    let (st, v) = call(
        &keys,
        Method::POST,
        "/key/update",
        json!({"key": secret, "duration": null}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["expires"], Value::Null);
    assert!(keys.authenticate(&secret).is_ok());
}

async fn delete(url: String) {
    let keys = Keys::open(&url, manual()).await.unwrap();
    let (a, _) = generate(&keys, Value::Null).await;
    let (b, _) = generate(&keys, Value::Null).await;
    let (st, v) = call(&keys, Method::POST, "/key/delete", json!({"keys": [a]})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v, json!({"deleted_keys": [a]}));
    let err = keys.authenticate(&a).unwrap_err();
    assert_eq!(err, KeyError::Deleted);
    assert_eq!((err.status(), err.code()), (401, "invalid_api_key"));
    assert_eq!(err.message(), KeyError::Unknown.message());
    assert!(keys.authenticate(&b).is_ok());

    let (st, v) = call(
        &keys,
        Method::GET,
        &format!("/key/info?key={a}"),
        Value::Null,
    )
    .await;
    assert_error(st, &v, 404, "key_not_found");
    assert!(!v.to_string().contains(&a), "the secret is echoed: {v}");
    let (st, v) = call(
        &keys,
        Method::POST,
        "/key/update",
        json!({"key": a, "rpm": 1}),
    )
    .await;
    assert_error(st, &v, 404, "key_not_found");
    // All or nothing: one unknown key deletes none.
    let (st, v) = call(&keys, Method::POST, "/key/delete", json!({"keys": [b, a]})).await;
    assert_error(st, &v, 404, "key_not_found");
    assert!(keys.authenticate(&b).is_ok());
    // A restart still refuses the deleted key.
    drop(keys);
    let keys = Keys::open(&url, manual()).await.unwrap();
    assert_eq!(keys.authenticate(&a).unwrap_err(), KeyError::Deleted);
    assert!(keys.authenticate(&b).is_ok());
}

async fn update(url: String) {
    let keys = Keys::open(&url, manual()).await.unwrap();
    let (secret, g) = generate(
        &keys,
        json!({"models": ["a"], "max_budget": 5, "key_alias": "ci"}),
    )
    .await;
    let (st, v) = call(
        &keys,
        Method::POST,
        "/key/update",
        json!({"key": secret, "models": ["a", "b"], "aliases": {"x": "b"}, "rpm_limit": 7,
               "tpm": 70, "max_budget": null, "metadata": {"owner": "me"}}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["key"], secret.as_str());
    assert_eq!(v["models"], json!(["a", "b"]));
    assert_eq!(v["max_budget"], Value::Null);
    assert_eq!(v["key_alias"], "ci");
    assert_eq!(v["key_id"], g["key_id"]);
    // The view changes at once, without a refresh.
    let e = keys.authenticate(&secret).unwrap();
    assert!(e.allows_model("b"));
    assert_eq!(e.resolve_model("x"), "b");
    assert_eq!((e.rpm(), e.tpm()), (Some(7), Some(70)));
    assert_eq!(e.key.limits.max_budget, None);
    assert_eq!(e.key.metadata, json!({"owner": "me"}));
    // ... and the database too.
    let fresh = Keys::open(&url, manual()).await.unwrap();
    let i = info(&fresh, &secret).await;
    assert_eq!(i["models"], json!(["a", "b"]));
    assert_eq!(i["rpm"], 7);
    assert_eq!(i["metadata"], json!({"owner": "me"}));

    // Bad input: 400 invalid_request naming the field; nothing changes.
    for (body, param) in [
        (json!({"key": secret, "duration": "5x"}), "duration"),
        (json!({"key": secret, "models": "a"}), "models"),
        (json!({"key": secret, "rpm": -1}), "rpm"),
        (json!({"key": secret, "max_budget": "ten"}), "max_budget"),
        (json!({"key": secret, "aliases": {"x": 1}}), "aliases"),
        (
            json!({"key": secret, "budget_duration": 30}),
            "budget_duration",
        ),
        (json!({"key": secret, "team_id": 5}), "team_id"),
        (json!({"models": ["a"]}), "key"),
    ] {
        let (st, v) = call(&keys, Method::POST, "/key/update", body.clone()).await;
        assert_error(st, &v, 400, "invalid_request");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], param, "{body}");
    }
    assert_eq!(keys.authenticate(&secret).unwrap().rpm(), Some(7));
    // A team must exist.
    let (st, v) = call(
        &keys,
        Method::POST,
        "/key/update",
        json!({"key": secret, "team_id": "no-such-team"}),
    )
    .await;
    assert_error(st, &v, 404, "team_not_found");
    let bad = keys::handle(&keys, &Method::POST, "/key/generate", None, b"{not json").await;
    assert_error(bad.0, &bad.1, 400, "invalid_request");
    let bad = keys::handle(&keys, &Method::POST, "/key/generate", None, b"[1]").await;
    assert_error(bad.0, &bad.1, 400, "invalid_request");
    let (st, v) = call(
        &keys,
        Method::POST,
        "/key/generate",
        json!({"duration": "thirty days"}),
    )
    .await;
    assert_error(st, &v, 400, "invalid_request");
    assert_eq!(v["error"]["param"], "duration");
    let (st, v) = call(&keys, Method::GET, "/key/info", Value::Null).await;
    assert_error(st, &v, 400, "invalid_request");
    let (st, v) = call(&keys, Method::POST, "/key/delete", json!({"keys": []})).await;
    assert_error(st, &v, 400, "invalid_request");
    let (st, v) = call(&keys, Method::GET, "/key/generate", Value::Null).await;
    assert_error(st, &v, 405, "method_not_allowed");
    let (st, v) = call(&keys, Method::GET, "/key/nope", Value::Null).await;
    assert_error(st, &v, 404, "not_found");
    // /v1 prefix works too.
    let (st, _) = call(&keys, Method::GET, "/v1/key/list", Value::Null).await;
    assert_eq!(st, 200);
}

async fn list_shows_no_secrets(url: String) {
    let keys = Keys::open(&url, manual()).await.unwrap();
    let mut made = Vec::new();
    for i in 0..3 {
        made.push(generate(&keys, json!({"metadata": {"n": i}})).await);
    }
    let (st, _) = call(
        &keys,
        Method::POST,
        "/key/delete",
        json!({"keys": [made[1].0]}),
    )
    .await;
    assert_eq!(st, 200);
    let hashes: Vec<String> = keys
        .store()
        .load_all()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.hash)
        .collect();
    for path in [
        "/key/list",
        "/key/list?return_full_object=true",
        "/key/list?page=1&size=1",
    ] {
        let (st, v) = call(&keys, Method::GET, path, Value::Null).await;
        assert_eq!(st, 200, "{v}");
        let text = v.to_string();
        for (secret, _) in &made {
            assert!(
                !text.contains(&secret[3..]),
                "{path} shows a secret: {text}"
            );
        }
        for h in &hashes {
            assert!(!text.contains(h.as_str()), "{path} shows a hash: {text}");
        }
        assert_eq!(v["total_count"], 2, "{v}");
    }
    let (_, v) = call(&keys, Method::GET, "/key/list", Value::Null).await;
    let ids: Vec<&str> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    let mut want = vec![
        made[0].1["key_id"].as_str().unwrap(),
        made[2].1["key_id"].as_str().unwrap(),
    ];
    want.sort();
    assert_eq!(sorted, want);
    let (_, v) = call(
        &keys,
        Method::GET,
        "/key/list?return_full_object=true",
        Value::Null,
    )
    .await;
    let metas: Vec<&Value> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["metadata"])
        .collect();
    assert!(
        metas.contains(&&json!({"n": 2})) && metas.contains(&&json!({"n": 0})),
        "{v}"
    );
    // Pages follow the list's (creation, key_id) order.
    let (_, p1) = call(&keys, Method::GET, "/key/list?page=1&size=1", Value::Null).await;
    let (_, v) = call(&keys, Method::GET, "/key/list?page=2&size=1", Value::Null).await;
    assert_eq!(p1["keys"], json!([ids[0]]));
    assert_eq!(v["keys"], json!([ids[1]]));
    assert_eq!(v["total_pages"], 2);
    // A key_id from the list can be fed back to delete (LiteLLM scripts do this with what list returns).
    let (st, v) = call(
        &keys,
        Method::POST,
        "/key/delete",
        json!({"keys": [ids[0]]}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let gone = made.iter().find(|(_, g)| g["key_id"] == ids[0]).unwrap();
    assert!(keys.authenticate(&gone.0).is_err());
    let kept = made.iter().find(|(_, g)| g["key_id"] == ids[1]).unwrap();
    assert!(keys.authenticate(&kept.0).is_ok());
}

async fn spend_batching(url: String) {
    let keys = Keys::open(&url, manual()).await.unwrap();
    let (a, _) = generate(&keys, Value::Null).await;
    let (b, _) = generate(&keys, Value::Null).await;
    let ea = keys.authenticate(&a).unwrap();
    let eb = keys.authenticate(&b).unwrap();
    // Micro-dollars add exactly, whatever the grouping.
    for i in 0..1000 {
        spend(&keys, &ea, if i % 2 == 0 { "m1" } else { "m2" }, 125_000);
        spend(&keys, &eb, "m1", 62_500);
    }
    spend(&keys, &ea, "m1", 0); // nothing to record
                                // Visible at once, before any write.
    assert_eq!(ea.spend(), Micros(125_000_000));
    assert_eq!(keys.authenticate(&a).unwrap().spend(), Micros(125_000_000));
    assert_eq!(info(&keys, &a).await["spend"], 125.0);
    assert_eq!(
        keys.store().get(&ea.key.hash).await.unwrap().unwrap().spend,
        Micros(0)
    );
    // One flush writes everything in one batch; nothing is counted twice or lost.
    keys.flush().await.unwrap();
    assert_eq!(ea.spend(), Micros(125_000_000));
    assert_eq!(
        keys.store().get(&ea.key.hash).await.unwrap().unwrap().spend,
        Micros(125_000_000)
    );
    assert_eq!(
        keys.store().get(&eb.key.hash).await.unwrap().unwrap().spend,
        Micros(62_500_000)
    );
    keys.refresh().await.unwrap();
    assert_eq!(keys.authenticate(&a).unwrap().spend(), Micros(125_000_000));
    let i = info(&keys, &a).await;
    assert_eq!(i["spend"], 125.0);
    assert_eq!(i["model_spend"], json!({"m1": 62.5, "m2": 62.5}));
    // A second round on an entry from the old snapshot still counts (pending carries over).
    spend(&keys, &ea, "m1", 500_000);
    assert_eq!(keys.authenticate(&a).unwrap().spend(), Micros(125_500_000));
    keys.flush().await.unwrap();
    keys.flush().await.unwrap(); // nothing pending: no double write
    let other = Keys::open(&url, manual()).await.unwrap();
    assert_eq!(other.authenticate(&a).unwrap().spend(), Micros(125_500_000));
    assert_eq!(info(&other, &b).await["model_spend"], json!({"m1": 62.5}));

    // Real prices: the stored total is exactly the sum of the priced usages.
    let (c, _) = generate(&keys, Value::Null).await;
    let ec = keys.authenticate(&c).unwrap();
    let price = pricing::Price {
        input: pricing::PerMtok(2_500_000),
        cached_input: pricing::PerMtok(1_250_000),
        cache_write: pricing::PerMtok(2_500_000),
        output: pricing::PerMtok(10_000_000),
        batch_discount: pricing::Ppm(500_000),
    };
    let mut expected = Micros(0);
    for i in 0..500u64 {
        let usage = pricing::TokenUsage {
            prompt: 100 + i,
            cached_prompt: i % 50,
            completion: 20 + i % 7,
            ..Default::default()
        };
        let cost = pricing::cost(&price, &usage, i % 3 == 0);
        expected += cost;
        spend(&keys, &ec, "gpt-4o", cost.0);
        if i % 100 == 0 {
            keys.flush().await.unwrap();
        }
    }
    keys.flush().await.unwrap();
    let stored = keys.store().get(&ec.key.hash).await.unwrap().unwrap().spend;
    assert_eq!(stored, expected);
    assert_eq!(ec.spend(), expected);

    // The pending buffer is per (key, model): many distinct model names stay bounded.
    let (d, _) = generate(&keys, Value::Null).await;
    let ed = keys.authenticate(&d).unwrap();
    for i in 0..(keys::MAX_PENDING_MODELS + 50) {
        spend(&keys, &ed, &format!("model-{i}"), 1_000_000);
    }
    keys.flush().await.unwrap();
    let per_model = keys.store().model_spend(&ed.key.hash).await.unwrap();
    assert_eq!(per_model.len(), keys::MAX_PENDING_MODELS + 1);
    assert_eq!(per_model[keys::OTHER_MODEL], Micros(50_000_000));
    assert_eq!(
        per_model.values().copied().sum::<Micros>(),
        Micros((keys::MAX_PENDING_MODELS as u64 + 50) * 1_000_000)
    );
}

async fn budget_exceeded(url: String) {
    let keys = Keys::open(&url, manual()).await.unwrap();
    let (a, _) = generate(&keys, json!({"max_budget": 1.0})).await;
    let e = keys.authenticate(&a).unwrap();
    spend(&keys, &e, "m", 750_000);
    assert!(keys.authenticate(&a).is_ok());
    spend(&keys, &e, "m", 500_000); // the request in flight when the budget ran out: overshoot 0.25
    let err = keys.authenticate(&a).unwrap_err();
    assert_eq!(err, KeyError::BudgetExceeded);
    assert_eq!((err.status(), err.code()), (429, "budget_exceeded"));
    keys.flush().await.unwrap();
    assert_eq!(keys.authenticate(&a).unwrap_err(), KeyError::BudgetExceeded);
    keys.refresh().await.unwrap();
    assert_eq!(keys.authenticate(&a).unwrap_err(), KeyError::BudgetExceeded);
    // Another instance (a restart) refuses it too; raising the budget lets it through again.
    let other = Keys::open(&url, manual()).await.unwrap();
    assert_eq!(
        other.authenticate(&a).unwrap_err(),
        KeyError::BudgetExceeded
    );
    let (st, v) = call(
        &other,
        Method::POST,
        "/key/update",
        json!({"key": a, "max_budget": 2}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["spend"], 1.25);
    assert!(other.authenticate(&a).is_ok());
    // Exactly at the budget is spent.
    let (b, _) = generate(&keys, json!({"max_budget": 0.5})).await;
    let eb = keys.authenticate(&b).unwrap();
    spend(&keys, &eb, "m", 500_000);
    assert_eq!(keys.authenticate(&b).unwrap_err(), KeyError::BudgetExceeded);
}

async fn budget_reset(url: String) {
    let keys = Keys::open(&url, fast()).await.unwrap();
    let task = keys.spawn();
    let (a, g) = generate(&keys, json!({"max_budget": 1.0, "budget_duration": "1s"})).await;
    assert_eq!(g["budget_duration"], "1s");
    assert!(g["budget_reset_at"].is_string());
    let e = keys.authenticate(&a).unwrap();
    let first_reset = e.key.limits.budget_reset_at.unwrap();
    assert_eq!(first_reset, e.key.created + 1);
    spend(&keys, &e, "m", 2_000_000);
    assert_eq!(keys.authenticate(&a).unwrap_err(), KeyError::BudgetExceeded);
    // Within one period (1 s, second granularity) plus one refresh the key works again, with spend 0
    // in the database; the per-model lifetime spend is kept.
    eventually(Duration::from_secs(5), "budget resets", || {
        keys.authenticate(&a).is_ok()
    })
    .await;
    let hash = e.key.hash.clone();
    let t = Instant::now();
    loop {
        let k = keys.store().get(&hash).await.unwrap().unwrap();
        if k.spend == Micros(0) && k.limits.budget_reset_at.unwrap() > first_reset {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "reset not stored: {k:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        keys.store().model_spend(&hash).await.unwrap()["m"],
        Micros(2_000_000)
    );
    task.abort();
}

async fn two_views(url: String) {
    let a = Keys::open(&url, fast()).await.unwrap();
    let b = Keys::open(&url, fast()).await.unwrap();
    let (ta, tb) = (a.spawn(), b.spawn());
    let bound = fast().refresh * 5 + Duration::from_secs(1);

    let (secret, _) = generate(&a, Value::Null).await;
    assert!(a.authenticate(&secret).is_ok());
    let took = eventually(bound, "B sees A's new key", || {
        b.authenticate(&secret).is_ok()
    })
    .await;
    eprintln!("new key visible on the other view after {took:?}");

    // Spend on A reaches B within flush + refresh.
    let ea = a.authenticate(&secret).unwrap();
    spend(&a, &ea, "m", 250_000);
    eventually(bound, "B sees A's spend", || {
        b.authenticate(&secret).map(|e| e.spend()) == Ok(Micros(250_000))
    })
    .await;

    // A deletion through B is refused by A within the refresh bound.
    let (st, v) = call(&b, Method::POST, "/key/delete", json!({"keys": [secret]})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(b.authenticate(&secret).unwrap_err(), KeyError::Deleted);
    let took = eventually(bound, "A refuses the key deleted on B", || {
        a.authenticate(&secret).is_err()
    })
    .await;
    eprintln!("deletion visible on the other view after {took:?}");
    assert!(
        took <= fast().refresh * 2 + Duration::from_millis(800),
        "{took:?}"
    );

    // Info on A finds a key generated on B before A's next refresh (database fallback).
    let (fresh, _) = generate(&b, json!({"rpm": 3})).await;
    assert_eq!(info(&a, &fresh).await["rpm"], 3);
    ta.abort();
    tb.abort();
}

async fn shutdown_flushes(url: String) {
    let keys = Keys::open(&url, manual()).await.unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let k2 = keys.clone();
    let task = tokio::spawn(async move { k2.run(rx).await });
    let (a, _) = generate(&keys, Value::Null).await;
    let e = keys.authenticate(&a).unwrap();
    spend(&keys, &e, "m", 500_000);
    tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        keys.store().get(&e.key.hash).await.unwrap().unwrap().spend,
        Micros(500_000)
    );
}

// ---------------------------------------------------------------- backends

type Case = fn(String) -> Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        const CASES: &[(&str, Case)] = &[$((stringify!($name), |u| Box::pin($name(u)))),*];
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let url = format!("sqlite://{}/nested/dir/keys.db", super::tmp_path(stringify!($name)).display());
                    super::$name(url).await;
                }
            )*
        }
    };
}

cases!(
    generate_and_authenticate,
    expiry,
    delete,
    update,
    list_shows_no_secrets,
    spend_batching,
    budget_exceeded,
    budget_reset,
    two_views,
    shutdown_flushes,
);

/// The whole suite against one real PostgreSQL server, a fresh database per case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_suite() {
    let pg = Postgres::start();
    for (i, (name, case)) in CASES.iter().enumerate() {
        let url = pg.create_db(&format!("keys_{i}"));
        eprintln!("postgres: {name}");
        case(url).await;
    }
}

/// Migrations are idempotent and safe when several instances start at once on one database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_migrations() {
    let pg = Postgres::start();
    let url = pg.create_db("migrate");
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Keys::open(&url, manual()).await })
        })
        .collect();
    let mut views: Vec<Arc<Keys>> = Vec::new();
    for o in opens {
        views.push(o.await.unwrap().unwrap());
    }
    let (secret, _) = generate(&views[0], Value::Null).await;
    views[3].refresh().await.unwrap();
    assert!(views[3].authenticate(&secret).is_ok());
    // The URL's password never shows in messages.
    assert_eq!(
        keys::store::redact_url("postgres://u:hunter2@h:5432/db"),
        "postgres://u:***@h:5432/db"
    );
    let err = Keys::open("mysql://x", manual()).await.unwrap_err();
    assert!(err.to_string().contains("unsupported"), "{err}");
}

/// A database written by the release that kept dollars as DOUBLE PRECISION is converted in place
/// to micro-dollar columns, keeping every row (× 10⁶, rounded half away from zero).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_converts_dollar_columns_in_place() {
    let pg = Postgres::start();
    let url = pg.create_db("old_money");
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.batch_execute(
        "CREATE TABLE keys (hash TEXT PRIMARY KEY, key_id TEXT NOT NULL, alias TEXT,
           models TEXT NOT NULL DEFAULT '[]', aliases TEXT NOT NULL DEFAULT '{}', expires BIGINT,
           max_budget DOUBLE PRECISION, budget_duration BIGINT, budget_reset_at BIGINT,
           spend DOUBLE PRECISION NOT NULL DEFAULT 0, rpm BIGINT, tpm BIGINT,
           metadata TEXT NOT NULL DEFAULT 'null', created BIGINT NOT NULL,
           deleted BOOLEAN NOT NULL DEFAULT FALSE);
         CREATE TABLE spend (key_hash TEXT NOT NULL, model TEXT NOT NULL,
           spend DOUBLE PRECISION NOT NULL DEFAULT 0, PRIMARY KEY (key_hash, model));
         ALTER TABLE keys ADD COLUMN IF NOT EXISTS routes TEXT NOT NULL DEFAULT '[]';
         INSERT INTO keys (hash, key_id, max_budget, spend, created)
           VALUES ('aa', 'kaa', 12.5, 0.0000125, 1), ('bb', 'kbb', NULL, 3.0000004, 2);
         INSERT INTO spend VALUES ('aa', 'gpt-4o', 0.0000125), ('bb', 'm', 3.0000004);",
    )
    .await
    .unwrap();
    // Two instances start at once on the old database: one converts, the other waits.
    let (a, b) = tokio::join!(Keys::open(&url, manual()), Keys::open(&url, manual()));
    let (a, _b) = (a.unwrap(), b.unwrap());
    let k = a.store().get("aa").await.unwrap().unwrap();
    assert_eq!(k.spend, Micros(13));
    assert_eq!(k.limits.max_budget, Some(Micros(12_500_000)));
    let k = a.store().get("bb").await.unwrap().unwrap();
    assert_eq!((k.spend, k.limits.max_budget), (Micros(3_000_000), None));
    assert_eq!(
        a.store().model_spend("bb").await.unwrap()["m"],
        Micros(3_000_000)
    );
    let cols: Vec<String> = c
        .query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'keys'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!cols.contains(&"spend".to_string()), "{cols:?}");
    assert!(cols.contains(&"spend_micros".to_string()), "{cols:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_creates_directory_and_reopens_from_sync_code() {
    let dir = tmp_path("sync");
    let url = format!("sqlite://{}/a/b/keys.db", dir.display());
    let keys = Keys::open_blocking(&url, manual()).unwrap();
    assert!(dir.join("a/b/keys.db").exists());
    let (secret, _) = generate(&keys, Value::Null).await;
    drop(keys);
    let again = Keys::open_blocking(&url, manual()).unwrap();
    assert!(again.authenticate(&secret).is_ok());
}

/// `llmproxy keys generate|info|list|delete -c FILE` against the config's `state.database`.
#[test]
fn cli_manages_keys_in_the_configured_database() {
    let dir = tmp_path("cli");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("c.yaml");
    std::fs::write(
        &cfg,
        "state:\n  database: \"${LLMPROXY_TEST_UNSET_DB:-sqlite://db/keys.db}\"\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(LLMPROXY)
            .arg("keys")
            .args(args)
            .arg("-c")
            .arg(&cfg)
            .current_dir(&dir)
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.success(), v)
    };
    let (ok, g) = run(&[
        "generate",
        "--models",
        "a,b",
        "--duration",
        "30d",
        "--max-budget",
        "10",
        "--rpm",
        "5",
        "--tpm",
        "50",
    ]);
    assert!(ok, "{g}");
    let secret = g["key"].as_str().unwrap().to_string();
    assert!(dir.join("db/keys.db").exists());
    let (ok, i) = run(&["info", "--key", &secret]);
    assert!(ok, "{i}");
    assert_eq!(i["info"]["models"], json!(["a", "b"]));
    assert_eq!(i["info"]["max_budget"], 10.0);
    assert_eq!(
        (i["info"]["rpm"].clone(), i["info"]["tpm"].clone()),
        (json!(5), json!(50))
    );
    let (ok, l) = run(&["list"]);
    assert!(ok);
    assert_eq!(l["keys"], json!([g["key_id"]]));
    assert!(!l.to_string().contains(&secret[3..]));
    let (ok, d) = run(&["delete", "--key", g["key_id"].as_str().unwrap()]);
    assert!(ok, "{d}");
    let (ok, e) = run(&["info", "--key", &secret]);
    assert!(!ok);
    assert_eq!(e["error"]["code"], "key_not_found");
    let (ok, e) = run(&["generate", "--duration", "5x"]);
    assert!(!ok);
    assert_eq!(e["error"]["param"], "duration");
}
