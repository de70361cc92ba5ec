//! Issue: governance — teams and end users through the real gateway, against SQLite and a real
//! PostgreSQL: a team's budget shared by its keys (the second key is refused once the first spent
//! it), team scope and rate limits, deleted teams, end-user budgets and limits, unknown end users
//! (passing, or refused with `keys.require_known_user`), spend by team in `/metrics` (top N +
//! other); and two instances on one PostgreSQL + Redis holding a team budget within the
//! documented overshoot bound.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test stops at the first surprise and prints what it measured"
)]

mod common;

use common::governance::*;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Every request of model `m` costs exactly $0.001: 100 prompt tokens (the mock reports what
/// `x-mock-prompt-tokens` says) at $10 per million, output free.
const COST_USD: f64 = 0.001;
const HUNDRED: [(&str, &str); 1] = [("x-mock-prompt-tokens", "100")];

fn models(mock: &Mock) -> String {
    format!(
        "upstreams:\n{}models:\n  - {{name: m, pricing: {{input_per_mtok: 10, output_per_mtok: 0}}, deployments: [{{upstream: a, model: gpt-4o-mini}}]}}\n  - {{name: other, pricing: {{input_per_mtok: 10, output_per_mtok: 0}}, deployments: [{{upstream: a, model: gpt-4o-mini}}]}}\n",
        upstream("a", mock)
    )
}

async fn new_team(gw: &Gateway, body: Value) -> String {
    let (s, v) = manage(gw, "POST", "/team/new", body).await;
    assert_eq!(s, 200, "{v}");
    v["team_id"].as_str().unwrap().to_string()
}

async fn team_spend(gw: &Gateway, team: &str) -> f64 {
    let (s, v) = manage(
        gw,
        "GET",
        &format!("/team/info?team_id={team}"),
        Value::Null,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v["team_info"]["spend"].as_f64().unwrap()
}

/// Waits (bounded) until the team's spend reached `usd`: a request's spend is booked when it has
/// been answered, so a client that sends its next request on a new connection at once can race it.
async fn settled_team_spend(gw: &Gateway, team: &str, usd: f64) {
    for _ in 0..500 {
        if team_spend(gw, team).await >= usd - 1e-12 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the team's spend never reached {usd}");
}

/// Everything but the two-instance case, against one database URL.
async fn suite(database: &str) {
    let mock = Mock::start("A");
    let (gw, log) = gateway_with_log(
        &keyed(
            database,
            &models(&mock),
            "",
            "keys: {spend_flush: 200ms, metrics_top_teams: 1}\n",
        ),
        &[],
    )
    .await;

    // --- team management in LiteLLM's shapes ---
    let research = new_team(
        &gw,
        json!({"team_alias": "research", "models": ["m"], "max_budget": 0.0035,
               "metadata": {"cost_center": "r&d"}}),
    )
    .await;
    assert!(research.starts_with("team-"), "{research}");
    let (s, v) = manage(&gw, "POST", "/team/new", json!({"team_id": research})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("already_exists"))
    );
    let (s, v) = manage(&gw, "POST", "/key/generate", json!({"team_id": "nope"})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("team_not_found")),
        "{v}"
    );
    let a = new_key(&gw, json!({"team_id": research})).await;
    let b = new_key(&gw, json!({"team_id": research})).await;
    let (s, info) = manage(
        &gw,
        "GET",
        &format!("/team/info?team_id={research}"),
        Value::Null,
    )
    .await;
    assert_eq!(s, 200, "{info}");
    assert_eq!(info["team_info"]["team_alias"], "research");
    assert_eq!(info["team_info"]["max_budget"], 0.0035);
    assert_eq!(info["keys"].as_array().unwrap().len(), 2);
    assert!(
        !info.to_string().contains(&a[3..]),
        "a secret in /team/info"
    );
    let (s, list) = manage(&gw, "GET", "/team/list", Value::Null).await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    // --- the team's scope binds its keys (the key itself allows every model) ---
    let msg = refused(
        chat_as(&gw, &a, "other", None, &HUNDRED).await,
        403,
        "model_not_allowed",
    )
    .await;
    assert!(msg.contains("team") && msg.contains("level: team"), "{msg}");

    // --- the team budget is shared: A spends it, then B is refused at once ---
    let mut n = 0;
    loop {
        let r = chat_as(&gw, &a, "m", None, &HUNDRED).await;
        if r.status() == 429 {
            let msg = refused(r, 429, "budget_exceeded").await;
            assert!(
                msg.contains("level: team") && msg.contains(&research),
                "{msg}"
            );
            break;
        }
        assert_eq!(r.status(), 200);
        n += 1;
        assert!(n < 100, "the team budget never ran out");
        settled_team_spend(&gw, &research, n as f64 * COST_USD).await;
    }
    // $0.0035 at $0.001 a request: the fourth request reaches $0.004 and the fifth is refused.
    assert_eq!(n, 4);
    let msg = refused(
        chat_as(&gw, &b, "m", None, &HUNDRED).await,
        429,
        "budget_exceeded",
    )
    .await;
    assert!(msg.contains("level: team"), "{msg}");
    assert!((team_spend(&gw, &research).await - 4.0 * COST_USD).abs() < 1e-12);
    // Raising the team's budget lets both keys through again.
    let (s, v) = manage(
        &gw,
        "POST",
        "/team/update",
        json!({"team_id": research, "max_budget": 1}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["max_budget"], 1.0);
    assert_eq!(chat_as(&gw, &b, "m", None, &HUNDRED).await.status(), 200);

    // --- team rate limits: shared by the team's keys, the refusal names the team ---
    let fast = new_team(&gw, json!({"team_alias": "fast", "rpm": 2})).await;
    let c = new_key(&gw, json!({"team_id": fast})).await;
    let d = new_key(&gw, json!({"team_id": fast})).await;
    assert_eq!(chat_as(&gw, &c, "m", None, &HUNDRED).await.status(), 200);
    let msg = refused(
        chat_as(&gw, &d, "m", None, &HUNDRED).await,
        429,
        "rate_limited",
    )
    .await;
    assert!(msg.contains("level: team") && msg.contains(&fast), "{msg}");

    // --- spend by team in /metrics: the top team by spend, the rest as `other` ---
    let t = Instant::now();
    loop {
        let m = gw.metrics().await;
        let top = metric(
            &m,
            "llmproxy_team_spend_usd",
            &[("team", research.as_str())],
        );
        let other = metric(&m, "llmproxy_team_spend_usd", &[("team", "other")]);
        if top.is_some_and(|v| (v - 5.0 * COST_USD).abs() < 1e-9)
            && other.is_some_and(|v| (v - COST_USD).abs() < 1e-9)
        {
            assert!(metric(&m, "llmproxy_team_spend_usd", &[("team", fast.as_str())]).is_none());
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "team spend metrics:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // --- a deleted team's keys are refused ---
    let (s, v) = manage(&gw, "POST", "/team/delete", json!({"team_ids": [fast]})).await;
    assert_eq!(s, 200, "{v}");
    let msg = refused(
        chat_as(&gw, &d, "m", None, &HUNDRED).await,
        401,
        "invalid_api_key",
    )
    .await;
    assert!(msg.contains(&fast), "{msg}");
    let (s, _) = manage(
        &gw,
        "GET",
        &format!("/team/info?team_id={fast}"),
        Value::Null,
    )
    .await;
    assert_eq!(s, 404);

    // --- end users: a budget for the request's `user`, whichever key sends it ---
    let (s, v) = manage(
        &gw,
        "POST",
        "/customer/new",
        json!({"user_id": "alice", "max_budget": 0.002, "alias": "Alice"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["litellm_budget_table"]["max_budget"], 0.002);
    let free = new_key(&gw, json!({})).await;
    for _ in 0..2 {
        assert_eq!(
            chat_as(&gw, &free, "m", Some("alice"), &HUNDRED)
                .await
                .status(),
            200
        );
    }
    let msg = refused(
        chat_as(&gw, &free, "m", Some("alice"), &HUNDRED).await,
        429,
        "budget_exceeded",
    )
    .await;
    assert!(
        msg.contains("level: end_user") && msg.contains("alice"),
        "{msg}"
    );
    // Another key, the same end user: refused too; the master key as well (the user's budget).
    assert_eq!(
        chat_as(&gw, &a, "m", Some("alice"), &HUNDRED)
            .await
            .status(),
        429
    );
    assert_eq!(
        chat_as(&gw, MASTER, "m", Some("alice"), &HUNDRED)
            .await
            .status(),
        429
    );
    // Unknown end users pass; the same key without a user too.
    assert_eq!(
        chat_as(&gw, &free, "m", Some("bob"), &HUNDRED)
            .await
            .status(),
        200
    );
    assert_eq!(chat_as(&gw, &free, "m", None, &HUNDRED).await.status(), 200);
    let (s, v) = manage(&gw, "GET", "/customer/info?end_user_id=alice", Value::Null).await;
    assert_eq!(s, 200, "{v}");
    assert!(
        (v["spend"].as_f64().unwrap() - 2.0 * COST_USD).abs() < 1e-12,
        "{v}"
    );
    // End-user rate limits and blocking.
    let (s, _) = manage(
        &gw,
        "POST",
        "/customer/new",
        json!({"user_id": "carol", "rpm_limit": 1}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        chat_as(&gw, &free, "m", Some("carol"), &HUNDRED)
            .await
            .status(),
        200
    );
    let msg = refused(
        chat_as(&gw, &free, "m", Some("carol"), &HUNDRED).await,
        429,
        "rate_limited",
    )
    .await;
    assert!(msg.contains("level: end_user"), "{msg}");
    let (s, _) = manage(&gw, "POST", "/customer/new", json!({"user_id": "dave"})).await;
    assert_eq!(s, 200);
    let (s, v) = manage(
        &gw,
        "POST",
        "/customer/block",
        json!({"user_ids": ["dave"]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    refused(
        chat_as(&gw, &free, "m", Some("dave"), &HUNDRED).await,
        403,
        "user_not_allowed",
    )
    .await;
    let (s, list) = manage(&gw, "GET", "/customer/list", Value::Null).await;
    assert_eq!((s, list.as_array().unwrap().len()), (200, 3), "{list}");

    // --- keys.require_known_user (a reload): unknown and missing users are refused, known pass ---
    let text = std::fs::read_to_string(&gw.config).unwrap();
    std::fs::write(
        &gw.config,
        text.replace("keys: {", "keys: {require_known_user: true, "),
    )
    .unwrap();
    gw.signal(libc::SIGHUP);
    let t = Instant::now();
    while chat_as(&gw, &free, "m", Some("bob"), &HUNDRED)
        .await
        .status()
        == 200
    {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the reload was not applied:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let msg = refused(
        chat_as(&gw, &free, "m", Some("bob"), &HUNDRED).await,
        403,
        "user_not_allowed",
    )
    .await;
    assert!(msg.contains("bob"), "{msg}");
    refused(
        chat_as(&gw, &free, "m", None, &HUNDRED).await,
        403,
        "user_not_allowed",
    )
    .await;
    let (s, _) = manage(
        &gw,
        "POST",
        "/customer/update",
        json!({"user_id": "alice", "max_budget": null}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        chat_as(&gw, &free, "m", Some("alice"), &HUNDRED)
            .await
            .status(),
        200
    );
    // The master key need not name a known end user.
    assert_eq!(
        chat_as(&gw, MASTER, "m", None, &HUNDRED).await.status(),
        200
    );
    // Deleting an end user makes it unknown.
    let (s, _) = manage(
        &gw,
        "POST",
        "/customer/delete",
        json!({"user_ids": ["alice"]}),
    )
    .await;
    assert_eq!(s, 200);
    refused(
        chat_as(&gw, &free, "m", Some("alice"), &HUNDRED).await,
        403,
        "user_not_allowed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_and_end_users_against_sqlite() {
    let db = tmp_path("teams.db");
    suite(&format!("sqlite://{}", db.display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_and_end_users_against_postgres() {
    let pg = Postgres::start();
    let url = pg.create_db("teams");
    suite(&url).await;
}

/// Requests by `key` on `gw`, `workers` at a time, until each worker gets a `budget_exceeded`:
/// `(successful requests, requests per second)`.
async fn spend_until_refused(gw: &Gateway, key: &str, workers: usize) -> (u64, f64) {
    let t = Instant::now();
    let mut all = Vec::new();
    for _ in 0..workers {
        let (gw_url, key) = (gw.url("/v1/chat/completions"), key.to_string());
        all.push(tokio::spawn(async move {
            let c = client();
            let mut ok = 0u64;
            loop {
                let r = c
                    .post(&gw_url)
                    .header("authorization", format!("Bearer {key}"))
                    .header("x-mock-prompt-tokens", "100")
                    .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    200 => ok += 1,
                    429 => {
                        let v: Value = r.json().await.unwrap();
                        assert_eq!(v["error"]["code"], "budget_exceeded", "{v}");
                        assert!(v["error"]["message"]
                            .as_str()
                            .unwrap()
                            .contains("level: team"));
                        return ok;
                    }
                    s => panic!("status {s}"),
                }
            }
        }));
    }
    let mut ok = 0;
    for w in all {
        ok += w.await.unwrap();
    }
    (ok, ok as f64 / t.elapsed().as_secs_f64())
}

/// Two instances on one PostgreSQL (keys, teams, spend) and one Redis (rate limits): a team's rpm
/// is one limit for both, and its budget holds within the documented overshoot bound — the requests
/// in flight when it was reached, plus what the other instance spent during one `spend_flush` +
/// `key_refresh` interval (see `keys` module docs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres_and_redis_hold_a_team_budget() {
    let pg = Postgres::start();
    let redis = Redis::start();
    let url = pg.create_db("shared_team");
    let mock = Mock::start_with("A", &["--latency-ms", "5"]);
    let cfg = keyed(
        &url,
        &models(&mock),
        &format!(", redis: \"{}\"", redis.url()),
        "keys: {spend_flush: 200ms}\n",
    );
    let g1 = gateway(&cfg).await;
    let g2 = gateway(&cfg).await;

    // A team rpm is shared through Redis: one request on g1 empties it for g2.
    let limited = new_team(&g1, json!({"rpm": 2})).await;
    let k1 = new_key(&g1, json!({"team_id": limited})).await;
    let k2 = new_key(&g1, json!({"team_id": limited})).await;
    let t = Instant::now();
    while chat_as(&g2, &k2, "other", None, &HUNDRED).await.status() == 401 {
        assert!(t.elapsed() < Duration::from_secs(3), "g2 never saw the key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // g2's first request took the bucket; g1's is refused by the same shared limit.
    let msg = refused(
        chat_as(&g1, &k1, "other", None, &HUNDRED).await,
        429,
        "rate_limited",
    )
    .await;
    assert!(msg.contains("level: team"), "{msg}");

    // The budget: $0.05, fifty requests' worth, spent by both instances at once.
    let budget = 0.05;
    let team = new_team(&g1, json!({"max_budget": budget})).await;
    let a = new_key(&g1, json!({"team_id": team})).await;
    let b = new_key(&g1, json!({"team_id": team})).await;
    let t = Instant::now();
    while chat_as(&g2, &b, "m", None, &[("x-mock-prompt-tokens", "0")])
        .await
        .status()
        == 401
    {
        assert!(t.elapsed() < Duration::from_secs(3), "g2 never saw the key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let workers = 2;
    let ((ok1, rate1), (ok2, rate2)) = tokio::join!(
        spend_until_refused(&g1, &a, workers),
        spend_until_refused(&g2, &b, workers)
    );
    // Both instances' spend reaches the database within a flush; read it after one more refresh.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let spent = team_spend(&g1, &team).await;
    let requests = ok1 + ok2;
    assert!(
        (spent - requests as f64 * COST_USD).abs() < 1e-9,
        "{spent} for {requests}"
    );
    // The bound: every request in flight when the budget was reached (workers on both instances),
    // plus the other instance's requests during one flush + refresh (+ the time of one load).
    let window = 0.2 + 0.2 + 0.2;
    let allowed = (2 * workers) as f64 + rate1.max(rate2) * window;
    let overshoot = (spent - budget) / COST_USD;
    eprintln!(
        "team budget {budget}: spent {spent} in {requests} requests ({ok1} on g1 at {rate1:.0}/s, {ok2} on g2 at {rate2:.0}/s); overshoot {overshoot:.0} requests, bound {allowed:.1}"
    );
    assert!(spent >= budget - 1e-9, "stopped before the budget: {spent}");
    assert!(
        overshoot <= allowed,
        "overshoot {overshoot} > bound {allowed}"
    );
}

/// A keyed gateway (SQLite in memory) whose rate limits are shared through a fresh Redis.
async fn with_redis() -> (Redis, Mock, Gateway) {
    let redis = Redis::start();
    let mock = Mock::start("A");
    let gw = gateway(&keyed(
        "sqlite://:memory:",
        &models(&mock),
        &format!(", redis: \"{}\"", redis.url()),
        "",
    ))
    .await;
    (redis, mock, gw)
}

/// A chat request admitted on an estimate of ~1,010 tokens (`max_tokens: 1000`) whose answer
/// uses ~110 (100 prompt tokens reported by the mock, and its short answer).
async fn large_estimate(gw: &Gateway, key: &str, user: Option<&str>) -> reqwest::Response {
    let mut body = json!({"model": "m", "max_tokens": 1000,
        "messages": [{"role": "user", "content": "hi"}]});
    if let Some(u) = user {
        body["user"] = json!(u);
    }
    client()
        .post(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .header("x-mock-prompt-tokens", "100")
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Token budgets of a key, its team and its end user, shared through Redis, are settled with each
/// answer's real usage at every level — in one Redis call per request besides its admission.
/// 90,000 tpm is ~1,510 tokens per (1.03 s) window in Redis; each request is admitted on an
/// estimate of ~1,010 tokens (`max_tokens`) and uses ~110, so the next request back to back fits
/// only if every level got its refund (else it is refused, naming the level).
#[tokio::test]
async fn token_budgets_in_redis_are_settled_at_every_level() {
    let (redis, _mock, gw) = with_redis().await;
    let team = new_team(&gw, json!({"tpm": 90000})).await;
    let (s, v) = manage(
        &gw,
        "POST",
        "/customer/new",
        json!({"user_id": "erin", "tpm": 90000}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let key = new_key(&gw, json!({"team_id": team, "tpm": 90000})).await;
    let calls_before = redis_script_calls(redis.port);
    let n = 4;
    for i in 0..n {
        let r = large_estimate(&gw, &key, Some("erin")).await;
        let status = r.status();
        assert_eq!(status, 200, "request {i}: {}", r.text().await.unwrap());
        // The settlement follows the answer: wait for it before the next admission.
        let want = calls_before + 2 * (i + 1);
        let t = Instant::now();
        while redis_script_calls(redis.port) < want {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "no settlement after request {i}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // One admission and one settlement per request, whatever the number of levels.
    assert_eq!(redis_script_calls(redis.port) - calls_before, 2 * n);
}

/// In Redis a cost above a key's per-window limit holds the window longer (the key's average rate
/// stays its limit); the refund of the estimate shortens that hold to what the answer used.
/// 2,500 tpm is ~42 tokens per window: a ~1,010-token estimate would hold it ~24 s, the ~110 tokens
/// the answer used ~3 s.
#[tokio::test]
async fn a_refund_in_redis_shortens_the_hold_of_a_large_estimate() {
    let (redis, _mock, gw) = with_redis().await;
    let key = new_key(&gw, json!({"tpm": 2500})).await;
    let before = redis_script_calls(redis.port);
    assert_eq!(large_estimate(&gw, &key, None).await.status(), 200);
    let t = Instant::now();
    while redis_script_calls(redis.port) < before + 2 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the answer was never settled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = large_estimate(&gw, &key, None).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        retry <= 5,
        "retry after {retry} s: the refund did not shorten the hold"
    );
    let t = Instant::now();
    loop {
        let s = large_estimate(&gw, &key, None).await.status();
        if s == 200 {
            break;
        }
        assert_eq!(s, 429);
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "still refused after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Lua script runs Redis has completed (`INFO commandstats`: EVALSHA and EVAL calls less their
/// failed calls — a script's first EVALSHA fails with NOSCRIPT and is sent again as EVAL).
fn redis_script_calls(port: u16) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"INFO commandstats\r\n").unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // A bulk reply: `$LEN\r\n` then the text; read until it is all in.
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "redis closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, rest)) = text.split_once("\r\n") {
            let len: usize = head.trim_start_matches('$').parse().unwrap();
            if rest.len() >= len {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buf)
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .map(|l| {
            let field = |name: &str| -> u64 {
                l.split([':', ','])
                    .find_map(|kv| kv.strip_prefix(name)?.parse().ok())
                    .unwrap_or(0)
            };
            field("calls=") - field("failed_calls=")
        })
        .sum()
}

/// Redis lost between a request's admission and the settlement of its usage: the answer still
/// reaches the client and its spend is still booked (spend lives in the keys database, not in
/// Redis); the settlement's failure only loses the refund of the estimate. The next governed
/// request is admitted on this instance's own budgets (`redis_failure: open`, the default) and the
/// failures are counted.
#[tokio::test]
async fn redis_lost_before_the_settlement_loses_no_answer_and_no_spend() {
    let (mut redis, _mock, gw) = with_redis().await;
    let key = new_key(&gw, json!({"tpm": 90000})).await;
    let before = redis_script_calls(redis.port);
    let pending = tokio::spawn({
        let url = gw.url("/v1/chat/completions");
        let key = key.clone();
        async move {
            client()
                .post(url)
                .header("authorization", format!("Bearer {key}"))
                .header("x-mock-latency-ms", "1500")
                .header("x-mock-prompt-tokens", "100")
                .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap()
        }
    });
    // Admitted (its script ran in Redis), not answered yet (the mock waits 1.5 s): Redis goes.
    let t = Instant::now();
    while redis_script_calls(redis.port) < before + 1 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "never admitted through Redis"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    redis.kill();
    let r = pending.await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], 100, "{v}");
    // 100 prompt tokens at $10 per million: 0.001 USD, booked.
    let t = Instant::now();
    loop {
        let (s, info) = manage(&gw, "GET", &format!("/key/info?key={key}"), Value::Null).await;
        assert_eq!(s, 200, "{info}");
        let spend = info["info"]["spend"].as_f64().unwrap_or(0.0);
        if (spend - 0.001).abs() < 1e-9 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "spend not booked: {info}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = gw.metrics().await;
    let errors = metric(&m, "llmproxy_state_errors_total", &[("backend", "redis")]).unwrap_or(0.0);
    assert!(errors >= 1.0, "{m}");
}
