//! Issue 9: Batch API coalescing through the real gateway and the mock's Files + Batches API.
//! 1,000 concurrent opted-in requests become exactly 5 batch jobs and every client gets the answer
//! to its own request; embeddings are batched; a failed batch and the lines a grace cancel left
//! unfinished go synchronously; a gateway killed mid-batch has the batch finished, journaled and
//! charged by the next one (SQLite and PostgreSQL); spend is at the batch price; streams stay
//! synchronous; a graceful shutdown sends what was not submitted synchronously.
//!
//! Azure OpenAI upstreams batch through Azure's paths (`/openai/files?api-version=`, the v1
//! surface), with the upstream's key and the model's Global Batch deployment; a failed Azure batch
//! falls back to the standard deployment. The crash window around the create is closed: a gateway
//! killed after the upstream created the batch but before it heard back has the batch found by its
//! `metadata.llmproxy_job` and finished by the next gateway (SQLite and PostgreSQL); one killed
//! before the create has its input file deleted; a create answered 5xx after it happened is found
//! at once and its clients answered from the batch.
//!
//! Each scenario prints (eprintln) the jobs created, client latency p50/p95/p99 and fallbacks.
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

const MASTER: &str = "sk-master-batch-0123456789";

/// A config with a batch chat model `m` and a batch embeddings model `e` (`batch` and `ebatch`
/// are their `batch:` sections) on one OpenAI upstream, journal in `database`.
fn batch_config(mock: &Mock, database: &str, batch: &str, ebatch: &str) -> String {
    config(&format!(
        "state: {{database: \"{database}\", key_refresh: 200ms}}\nupstreams:\n{}models:\n  - {{name: m, pricing: {{input_per_mtok: 2.5, output_per_mtok: 10}}, batch: {batch}, deployments: [{{upstream: a, model: gpt-4o-mini}}]}}\n  - {{name: e, pricing: {{input_per_mtok: 0.02, output_per_mtok: 0}}, batch: {ebatch}, deployments: [{{upstream: a, model: text-embedding-3-small}}]}}\n",
        openai_upstream("a", mock)
    ))
}

fn with_master_key(cfg: String) -> String {
    cfg.replace(
        "  threads: 2\n",
        &format!("  threads: 2\n  master_key: \"{MASTER}\"\n"),
    )
}

fn sqlite_url(name: &str) -> String {
    format!("sqlite://{}", tmp_path(name).display())
}

/// One chat answer as a client saw it.
#[derive(Debug)]
struct Seen {
    status: u16,
    batch: Option<String>,
    content: String,
    latency: Duration,
}

fn chat_body(marker: &str) -> Value {
    chat_body_for("m", marker)
}

fn chat_body_for(model: &str, marker: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": marker}]})
}

async fn chat(
    c: &reqwest::Client,
    gw_url: &str,
    marker: &str,
    opt_in: bool,
    key: Option<&str>,
) -> Result<Seen, reqwest::Error> {
    chat_to(c, gw_url, "m", marker, opt_in, key).await
}

async fn chat_to(
    c: &reqwest::Client,
    gw_url: &str,
    model: &str,
    marker: &str,
    opt_in: bool,
    key: Option<&str>,
) -> Result<Seen, reqwest::Error> {
    let start = Instant::now();
    let mut r = c.post(gw_url).json(&chat_body_for(model, marker));
    if opt_in {
        r = r.header("x-llmproxy-batch", "1");
    }
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let resp = r.send().await?;
    let status = resp.status().as_u16();
    let batch = resp
        .headers()
        .get("x-llmproxy-batch")
        .map(|v| v.to_str().unwrap().to_string());
    let v: Value = resp.json().await?;
    Ok(Seen {
        status,
        batch,
        content: v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        latency: start.elapsed(),
    })
}

/// Send `n` chats at once (marker `{prefix}-{i}`) and collect what each client saw, in order.
async fn burst(gw: &Gateway, prefix: &str, n: usize, opt_in: bool, key: Option<&str>) -> Vec<Seen> {
    burst_to(gw, "m", prefix, n, opt_in, key).await
}

/// [`burst`] on model `model`.
async fn burst_to(
    gw: &Gateway,
    model: &str,
    prefix: &str,
    n: usize,
    opt_in: bool,
    key: Option<&str>,
) -> Vec<Seen> {
    collect(spawn_burst(gw, model, prefix, n, opt_in, key), n).await
}

/// Start `n` chats at once (marker `{prefix}-{i}`) without waiting for them; [`collect`] gathers
/// their answers.
fn spawn_burst(
    gw: &Gateway,
    model: &str,
    prefix: &str,
    n: usize,
    opt_in: bool,
    key: Option<&str>,
) -> tokio::task::JoinSet<(usize, Seen)> {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let url = gw.url("/v1/chat/completions");
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let (c, url, marker, key, model) = (
            c.clone(),
            url.clone(),
            format!("{prefix}-{i}"),
            key.map(str::to_string),
            model.to_string(),
        );
        set.spawn(async move {
            (
                i,
                chat_to(&c, &url, &model, &marker, opt_in, key.as_deref())
                    .await
                    .expect("chat"),
            )
        });
    }
    set
}

/// What each of `n` spawned chats saw, in request order.
async fn collect(mut set: tokio::task::JoinSet<(usize, Seen)>, n: usize) -> Vec<Seen> {
    let mut out: Vec<Option<Seen>> = (0..n).map(|_| None).collect();
    while let Some(r) = set.join_next().await {
        let (i, seen) = r.unwrap();
        out[i] = Some(seen);
    }
    out.into_iter().map(Option::unwrap).collect()
}

/// Every client got 200 and the echo of its own marker.
fn assert_own_answers(prefix: &str, seen: &[Seen]) {
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(s.status, 200, "request {i}: {s:?}");
        assert_eq!(
            s.content,
            format!("{prefix}-{i}"),
            "request {i} got another's answer"
        );
    }
}

fn percentiles(seen: &[Seen]) -> (f64, f64, f64) {
    let mut ms: Vec<f64> = seen
        .iter()
        .map(|s| s.latency.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    (p(0.50), p(0.95), p(0.99))
}

async fn counter(gw: &Gateway, name: &str, label: (&str, &str)) -> f64 {
    metric(&gw.metrics().await, name, &[label]).unwrap_or(0.0)
}

async fn report(scenario: &str, gw: &Gateway, mock: &Mock, seen: &[Seen]) {
    let (p50, p95, p99) = percentiles(seen);
    let batched = seen.iter().filter(|s| s.batch.is_some()).count();
    eprintln!(
        "[batch] {scenario}: jobs created {}, requests {}, answered from a batch {batched}, \
         fallbacks {} (metric), latency p50 {p50:.0} ms, p95 {p95:.0} ms, p99 {p99:.0} ms",
        mock.batches().await.len(),
        seen.len(),
        counter(gw, "llmproxy_batch_requests_total", ("result", "fallback")).await,
    );
}

/// Poll until `f` holds (bounded).
async fn wait_for<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_opted_in_requests_make_five_batches() {
    let mock = Mock::start("A");
    mock.echo(true).await;
    let gw = gateway(&batch_config(
        &mock,
        &sqlite_url("batch.db"),
        "{max_size: 200, max_wait: 30s, poll_interval: 50ms}",
        "{max_size: 10}",
    ))
    .await;
    let seen = burst(&gw, "marker", 1000, true, None).await;
    assert_own_answers("marker", &seen);
    report("1000 concurrent, max_size 200", &gw, &mock, &seen).await;

    let batches = mock.batches().await;
    assert_eq!(batches.len(), 5, "{batches:#?}");
    for b in &batches {
        assert_eq!(b["lines"], 200, "{b}");
        assert_eq!(b["endpoint"], "/v1/chat/completions");
    }
    // Every answer names its batch, one of the five.
    let ids: std::collections::HashSet<&str> =
        seen.iter().map(|s| s.batch.as_deref().unwrap()).collect();
    assert_eq!(ids.len(), 5);
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "llmproxy_batch_requests_total",
            &[("result", "batched")]
        ),
        Some(1000.0)
    );
    assert_eq!(
        metric(&m, "llmproxy_batch_jobs_total", &[("status", "completed")]),
        Some(5.0)
    );
    let stats = gw.stats().await;
    let b = &stats["batches"];
    assert_eq!(b["total"], 5, "{stats}");
    assert_eq!(b["successful"], 5);
    assert_eq!(b["failed"], 0);
    assert_eq!(b["requests_per_batch"], 200.0);
    assert!(b["p99_time_ms"].as_f64().unwrap() >= b["p50_time_ms"].as_f64().unwrap());
    eprintln!("[batch] /stats batches: {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_are_batched() {
    let mock = Mock::start("A");
    let gw = gateway(&batch_config(
        &mock,
        &sqlite_url("batch.db"),
        "{max_size: 200}",
        "{max_size: 10, max_wait: 30s, poll_interval: 50ms}",
    ))
    .await;
    let c = client();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..30usize {
        let (c, url) = (c.clone(), gw.url("/v1/embeddings"));
        set.spawn(async move {
            let start = Instant::now();
            // The number of inputs is this request's marker: the answer has one vector per input.
            let inputs: Vec<String> = (0..=(i % 4)).map(|j| format!("text {i} {j}")).collect();
            let r = c
                .post(url)
                .header("x-llmproxy-batch", "1")
                .json(&json!({"model": "e", "input": inputs}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let batch = r
                .headers()
                .get("x-llmproxy-batch")
                .map(|v| v.to_str().unwrap().to_string());
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["data"].as_array().unwrap().len(), i % 4 + 1, "{v}");
            assert_eq!(v["object"], "list");
            Seen {
                status,
                batch,
                content: String::new(),
                latency: start.elapsed(),
            }
        });
    }
    let mut seen = Vec::new();
    while let Some(r) = set.join_next().await {
        seen.push(r.unwrap());
    }
    assert!(seen.iter().all(|s| s.status == 200 && s.batch.is_some()));
    report("30 embeddings, max_size 10", &gw, &mock, &seen).await;
    let batches = mock.batches().await;
    assert_eq!(batches.len(), 3);
    assert!(batches
        .iter()
        .all(|b| b["endpoint"] == "/v1/embeddings" && b["lines"] == 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_batch_falls_back_to_the_synchronous_api() {
    let mock = Mock::start("A");
    mock.echo(true).await;
    mock.batch_config(json!({"outcome": "failed", "complete_after_ms": 200}))
        .await;
    let gw = gateway(&batch_config(
        &mock,
        &sqlite_url("batch.db"),
        "{max_size: 20, max_wait: 30s, poll_interval: 50ms}",
        "{max_size: 10}",
    ))
    .await;
    let seen = burst(&gw, "failed", 20, true, None).await;
    assert_own_answers("failed", &seen);
    report("failed batch", &gw, &mock, &seen).await;
    assert!(seen.iter().all(|s| s.batch.is_none()), "sync answers");
    assert_eq!(mock.batches().await.len(), 1);
    assert_eq!(mock.batches().await[0]["status"], "failed");
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "llmproxy_batch_requests_total",
            &[("result", "fallback")]
        ),
        Some(20.0)
    );
    assert_eq!(
        metric(&m, "llmproxy_batch_jobs_total", &[("status", "failed")]),
        Some(1.0)
    );
    assert_eq!(gw.stats().await["batches"]["failed"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_cancels_delivers_finished_lines_and_sends_the_rest_synchronously() {
    let mock = Mock::start("A");
    mock.echo(true).await;
    // Lines finish one by one between 0.5 s and 4.5 s; the gateway gives the batch 1 s.
    mock.batch_config(json!({"complete_after_ms": 5000, "cancel_after_ms": 100}))
        .await;
    let gw = gateway(&batch_config(
        &mock,
        &sqlite_url("batch.db"),
        "{max_size: 20, max_wait: 30s, poll_interval: 50ms, grace: 1s}",
        "{max_size: 10}",
    ))
    .await;
    let seen = burst(&gw, "grace", 20, true, None).await;
    assert_own_answers("grace", &seen);
    report("grace expiry", &gw, &mock, &seen).await;
    let from_batch = seen.iter().filter(|s| s.batch.is_some()).count();
    assert!(from_batch >= 1, "finished lines are delivered");
    assert!(from_batch < 20, "unfinished lines go synchronously");
    let batches = mock.batches().await;
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0]["status"], "cancelled");
    assert_eq!(batches[0]["cancel_called"], true);
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "llmproxy_batch_requests_total",
            &[("result", "fallback")]
        ),
        Some((20 - from_batch) as f64)
    );
    assert_eq!(
        metric(&m, "llmproxy_batch_jobs_total", &[("status", "cancelled")]),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_batch_delivers_what_finished_and_the_rest_goes_synchronously() {
    let mock = Mock::start("A");
    mock.echo(true).await;
    // An expired batch ran its first half; the rest are `batch_expired` lines in the error file.
    mock.batch_config(json!({"outcome": "expired", "complete_after_ms": 400}))
        .await;
    let gw = gateway(&batch_config(
        &mock,
        &sqlite_url("batch.db"),
        "{max_size: 20, max_wait: 30s, poll_interval: 50ms}",
        "{max_size: 10}",
    ))
    .await;
    let seen = burst(&gw, "expired", 20, true, None).await;
    assert_own_answers("expired", &seen);
    report("expired batch", &gw, &mock, &seen).await;
    assert_eq!(seen.iter().filter(|s| s.batch.is_some()).count(), 10);
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "llmproxy_batch_requests_total",
            &[("result", "fallback")]
        ),
        Some(10.0)
    );
    assert_eq!(
        metric(&m, "llmproxy_batch_jobs_total", &[("status", "expired")]),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_leave_are_dropped_from_delivery_and_still_charged() {
    let mock = Mock::start("A");
    mock.echo(true).await;
    // The batch takes longer than the listener's header timeout: a waiting client is not a slow one.
    mock.batch_config(json!({"complete_after_ms": 2500})).await;
    let gw = gateway(
        &with_master_key(batch_config(
            &mock,
            &sqlite_url("gone.db"),
            "{max_size: 10, max_wait: 30s, poll_interval: 50ms}",
            "{max_size: 10}",
        ))
        .replace(
            "  threads: 2\n",
            "  threads: 2\n  client_timeouts: {header: 1s, idle: 60s}\n",
        ),
    )
    .await;
    let (batched_key, sync_key) = (generate_key(&gw).await, generate_key(&gw).await);
    let url = gw.url("/v1/chat/completions");
    let mut set = tokio::task::JoinSet::new();
    for i in 0..10 {
        let (url, key) = (url.clone(), batched_key.clone());
        set.spawn(async move {
            // The odd ones give up after 500 ms.
            let timeout = if i % 2 == 1 { 500 } else { 30_000 };
            let c = reqwest::Client::builder()
                .timeout(Duration::from_millis(timeout))
                .build()
                .unwrap();
            (
                i,
                chat(&c, &url, &format!("gone-{i}"), true, Some(&key)).await,
            )
        });
    }
    let mut seen = Vec::new();
    while let Some(r) = set.join_next().await {
        let (i, r) = r.unwrap();
        match r {
            Ok(s) => {
                assert_eq!(i % 2, 0);
                assert_eq!(s.content, format!("gone-{i}"));
                assert!(s.batch.is_some());
                assert!(s.latency > Duration::from_secs(2));
                seen.push(s);
            }
            Err(e) => assert!(i % 2 == 1 && e.is_timeout(), "{i}: {e}"),
        }
    }
    assert_eq!(seen.len(), 5);
    report("5 of 10 clients leave", &gw, &mock, &seen).await;
    wait_for(
        "5 clients counted as gone",
        Duration::from_secs(10),
        || async {
            counter(
                &gw,
                "llmproxy_batch_requests_total",
                ("result", "client_gone"),
            )
            .await
                == 5.0
        },
    )
    .await;
    assert_eq!(mock.batches().await[0]["lines"], 10);
    // The lines of the clients that left were paid for: all ten are charged, at the batch price.
    let sync = burst(&gw, "gone", 10, false, Some(&sync_key)).await;
    assert_own_answers("gone", &sync);
    let (a, b) = (
        key_spend(&gw, &batched_key).await,
        key_spend(&gw, &sync_key).await,
    );
    assert!(b > 0.0);
    assert_half_price(a, b, 10);
}

/// `(state, status)` of every journal row.
async fn journal_rows(database: &str) -> Vec<(String, Option<String>)> {
    if let Some(path) = database.strip_prefix("sqlite://") {
        let path = path.to_string();
        return tokio::task::spawn_blocking(move || {
            let Ok(c) = rusqlite::Connection::open(&path) else {
                return Vec::new();
            };
            let Ok(mut st) = c.prepare("SELECT state, status FROM batch_jobs") else {
                return Vec::new();
            };
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        })
        .await
        .unwrap();
    }
    let (client, conn) = tokio_postgres::connect(database, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    match client
        .query("SELECT state, status FROM batch_jobs", &[])
        .await
    {
        Ok(rows) => rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        Err(_) => Vec::new(),
    }
}

async fn generate_key(gw: &Gateway) -> String {
    let r = client()
        .post(gw.url("/key/generate"))
        .bearer_auth(MASTER)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Batched spend is half the same requests' synchronous spend, up to rounding: each request is priced
/// exactly and rounded once to the micro-dollar (halves up), before or after the discount, so the two
/// sums of `n` requests may differ by half a micro-dollar per request.
fn assert_half_price(batched: f64, sync: f64, n: usize) {
    assert!(
        (batched - sync * 0.5).abs() <= n as f64 * 0.5e-6 + 1e-12,
        "{batched} vs {sync}"
    );
}

async fn key_spend(gw: &Gateway, key: &str) -> f64 {
    let v: Value = client()
        .get(gw.url(&format!("/key/info?key={key}")))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["info"]["spend"].as_f64().unwrap()
}

/// Kill the gateway (SIGKILL) once its batch is created and journaled; the next gateway on the same
/// database polls it to completion, journals it done and charges the key at the batch price.
async fn restart_mid_batch(database: &str) {
    let mock = Mock::start("A");
    mock.echo(true).await;
    mock.batch_config(json!({"complete_after_ms": 4000})).await;
    let template = with_master_key(batch_config(
        &mock,
        database,
        "{max_size: 10, max_wait: 30s, poll_interval: 100ms}",
        "{max_size: 10}",
    ));
    let mut first = gateway(&template).await;
    let batched_key = generate_key(&first).await;
    let sync_key = generate_key(&first).await;
    let url = first.url("/v1/chat/completions");
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..10 {
        let (url, key) = (url.clone(), batched_key.clone());
        clients.spawn(async move {
            let _ = chat(&client(), &url, &format!("restart-{i}"), true, Some(&key)).await;
        });
    }
    wait_for(
        "the batch to be journaled",
        Duration::from_secs(20),
        || async {
            journal_rows(database)
                .await
                .iter()
                .any(|(state, _)| state == "active")
        },
    )
    .await;
    assert_eq!(mock.batches().await.len(), 1);
    first.signal(libc::SIGKILL);
    assert!(first.wait_exit(Duration::from_secs(10)).await.is_some());
    while clients.join_next().await.is_some() {}
    let polls_before = mock.batches().await[0]["polls"].as_u64().unwrap();

    let started = Instant::now();
    let second = gateway(&template).await;
    wait_for(
        "the restarted gateway to finish the batch",
        Duration::from_secs(30),
        || async {
            journal_rows(database)
                .await
                .iter()
                .all(|(s, _)| s == "done")
        },
    )
    .await;
    let rows = journal_rows(database).await;
    assert_eq!(
        rows,
        vec![("done".to_string(), Some("completed".to_string()))]
    );
    let b = &mock.batches().await[0];
    assert!(b["polls"].as_u64().unwrap() > polls_before, "{b}");
    assert_eq!(b["status"], "completed");
    // The same ten requests synchronously, on another key: the batch cost half.
    let seen = burst(&second, "restart", 10, false, Some(&sync_key)).await;
    assert_own_answers("restart", &seen);
    let (batched, sync) = (
        key_spend(&second, &batched_key).await,
        key_spend(&second, &sync_key).await,
    );
    eprintln!(
        "[batch] restart mid-batch ({}): jobs created {}, finished by the second gateway {:.1} s \
         after it started; spend batched {batched:.9} USD vs the same requests synchronously {sync:.9} USD",
        database.split("://").next().unwrap(),
        mock.batches().await.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(sync > 0.0);
    assert_half_price(batched, sync, 10);
    // Its files were deleted.
    for f in [&b["input_file_id"], &b["output_file_id"]] {
        let r = client()
            .get(format!("{}/v1/files/{}", mock.base(), f.as_str().unwrap()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "file {f} still there");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_batch_is_finished_by_the_next_gateway_sqlite() {
    restart_mid_batch(&sqlite_url("restart.db")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_batch_is_finished_by_the_next_gateway_postgres() {
    let pg = Postgres::start();
    let url = pg.create_db("batch");
    restart_mid_batch(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_uses_the_batch_discount() {
    let mock = Mock::start("A");
    mock.echo(true).await;
    let gw = gateway(&with_master_key(batch_config(
        &mock,
        &sqlite_url("spend.db"),
        "{max_size: 25, max_wait: 30s, poll_interval: 50ms}",
        "{max_size: 10}",
    )))
    .await;
    let (batched_key, sync_key) = (generate_key(&gw).await, generate_key(&gw).await);
    let batched = burst(&gw, "spend", 25, true, Some(&batched_key)).await;
    assert_own_answers("spend", &batched);
    assert!(batched.iter().all(|s| s.batch.is_some()));
    let sync = burst(&gw, "spend", 25, false, Some(&sync_key)).await;
    assert!(sync.iter().all(|s| s.batch.is_none()));
    let (a, b) = (
        key_spend(&gw, &batched_key).await,
        key_spend(&gw, &sync_key).await,
    );
    eprintln!("[batch] spend: 25 batched {a:.9} USD, the same 25 synchronously {b:.9} USD");
    assert!(b > 0.0);
    assert_half_price(a, b, 25);
    // The spend metric counts both, once.
    let total = metric(
        &gw.metrics().await,
        "llmproxy_spend_usd_total",
        &[("model", "m")],
    )
    .unwrap();
    assert!((total - (a + b)).abs() < 1e-9, "{total} vs {}", a + b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_opt_outs_stay_synchronous() {
    let mock = Mock::start("A");
    mock.echo(true).await;
    let gw = gateway(&batch_config(
        &mock,
        &sqlite_url("batch.db"),
        "{mode: always, max_size: 1, max_wait: 30s, poll_interval: 50ms}",
        "{max_size: 10}",
    ))
    .await;
    let c = client();
    // A stream on a batch model (mode: always) is served synchronously.
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .json(
            &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "s"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-llmproxy-batch").is_none());
    assert!(r.text().await.unwrap().contains("data: [DONE]"));
    // `x-llmproxy-batch: 0` opts out of `always`.
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .header("x-llmproxy-batch", "0")
        .json(&chat_body("out"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("x-llmproxy-batch").is_none());
    assert!(mock.batches().await.is_empty());
    // Without a header, `always` batches.
    let seen = chat(&c, &gw.url("/v1/chat/completions"), "in", false, None)
        .await
        .unwrap();
    assert_eq!(seen.content, "in");
    assert!(seen.batch.is_some());
    assert_eq!(mock.batches().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_sends_unsubmitted_requests_synchronously() {
    let mock = Mock::start("A");
    mock.echo(true).await;
    let mut gw = gateway(
        &batch_config(
            &mock,
            &sqlite_url("batch.db"),
            "{max_size: 1000, max_wait: 10m, poll_interval: 50ms}",
            "{max_size: 10}",
        )
        .replace("  threads: 2\n", "  threads: 2\n  grace_period: 3s\n"),
    )
    .await;
    let set = spawn_burst(&gw, "m", "shutdown", 5, true, None);
    wait_for("5 gathered requests", Duration::from_secs(10), || async {
        gw.stats().await["batches"]["queued_requests"] == 5
    })
    .await;
    gw.signal(libc::SIGTERM);
    let seen = collect(set, 5).await;
    assert_own_answers("shutdown", &seen);
    assert!(seen.iter().all(|s| s.batch.is_none()));
    assert!(mock.batches().await.is_empty(), "nothing was submitted");
    let (p50, p95, p99) = percentiles(&seen);
    eprintln!(
        "[batch] graceful shutdown: jobs created 0, 5 gathered requests answered synchronously \
         (fallbacks 5), latency p50 {p50:.0} ms, p95 {p95:.0} ms, p99 {p99:.0} ms"
    );
    assert!(gw.wait_exit(Duration::from_secs(40)).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_releases_the_clients_of_submitted_batches_and_cancels_them() {
    let mock = Mock::start("A");
    mock.echo(true).await;
    mock.batch_config(json!({"complete_after_ms": 60_000}))
        .await;
    let mut gw = gateway(
        &batch_config(
            &mock,
            &sqlite_url("batch.db"),
            "{max_size: 5, max_wait: 30s, poll_interval: 50ms}",
            "{max_size: 10}",
        )
        .replace("  threads: 2\n", "  threads: 2\n  grace_period: 3s\n"),
    )
    .await;
    let set = spawn_burst(&gw, "m", "cancelled", 5, true, None);
    wait_for("the batch to run", Duration::from_secs(10), || async {
        gw.stats().await["batches"]["active_jobs"] == 1 && mock.batches().await.len() == 1
    })
    .await;
    gw.signal(libc::SIGTERM);
    let seen = collect(set, 5).await;
    assert_own_answers("cancelled", &seen);
    assert!(seen.iter().all(|s| s.batch.is_none()));
    wait_for(
        "the batch to be cancelled",
        Duration::from_secs(10),
        || async { mock.batches().await[0]["cancel_called"] == true },
    )
    .await;
    let (p50, p95, p99) = percentiles(&seen);
    eprintln!(
        "[batch] graceful shutdown, batch submitted: jobs created 1 (cancelled at shutdown), 5 \
         waiting requests answered synchronously (fallbacks 5), latency p50 {p50:.0} ms, p95 \
         {p95:.0} ms, p99 {p99:.0} ms"
    );
    assert!(gw.wait_exit(Duration::from_secs(40)).await.is_some());
}

/// Every journal row: `{job_id, batch_id, input_file_id, state, status}`.
async fn journal_jobs(database: &str) -> Vec<Value> {
    const Q: &str = "SELECT job_id, batch_id, input_file_id, state, status FROM batch_jobs";
    let to_json = |r: (
        String,
        Option<String>,
        Option<String>,
        String,
        Option<String>,
    )| {
        json!({"job_id": r.0, "batch_id": r.1, "input_file_id": r.2, "state": r.3, "status": r.4})
    };
    if let Some(path) = database.strip_prefix("sqlite://") {
        let path = path.to_string();
        let rows = tokio::task::spawn_blocking(move || {
            let Ok(c) = rusqlite::Connection::open(&path) else {
                return Vec::new();
            };
            let Ok(mut st) = c.prepare(Q) else {
                return Vec::new();
            };
            st.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
        })
        .await
        .unwrap();
        return rows.into_iter().map(to_json).collect();
    }
    let (client, conn) = tokio_postgres::connect(database, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    match client.query(Q, &[]).await {
        Ok(rows) => rows
            .iter()
            .map(|r| to_json((r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The status of `GET {path}` on the mock (with an Azure key).
async fn mock_status(mock: &Mock, path: &str) -> u16 {
    client()
        .get(format!("{}{path}", mock.base()))
        .header("api-key", "az-secret")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

const AZ_HEALTH: &str = "{interval: 200ms, timeout: 1s, unhealthy_after: 1, healthy_after: 1}";

/// Model `m` on an Azure upstream with a dated `api_version` (`api-key` auth), whose synchronous
/// deployment is `gpt4o-std` and whose batches go to the Global Batch deployment `gpt4o-batch`;
/// model `p` on the v1 surface (`api_version: preview`, Entra bearer), deployment `gpt4o-v1`.
fn azure_batch_config(mock: &Mock, database: &str) -> String {
    let base = mock.base();
    config(&format!(
        "state: {{database: \"{database}\"}}\nupstreams:\n  - {{name: az, provider: azure, url: \"{base}\", api_version: \"2024-10-21\", auth: {{type: header, name: api-key, value: az-secret}}, health_check: {AZ_HEALTH}}}\n  - {{name: az1, provider: azure, url: \"{base}\", api_version: preview, auth: {{type: bearer, token: entra-token}}, health_check: {AZ_HEALTH}}}\nmodels:\n  - {{name: m, batch: {{max_size: 10, max_wait: 30s, poll_interval: 50ms, deployments: {{az: gpt4o-batch}}}}, deployments: [{{upstream: az, model: gpt4o-std}}]}}\n  - {{name: p, batch: {{max_size: 10, max_wait: 30s, poll_interval: 50ms}}, deployments: [{{upstream: az1, model: gpt4o-v1}}]}}\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_batches_go_through_azure_paths_end_to_end() {
    let mock = Mock::start("AZ");
    mock.echo(true).await;
    let gw = gateway(&azure_batch_config(&mock, &sqlite_url("azure.db"))).await;
    let (dated, v1) = tokio::join!(
        burst_to(&gw, "m", "az", 20, true, None),
        burst_to(&gw, "p", "az1", 10, true, None)
    );
    assert_own_answers("az", &dated);
    assert_own_answers("az1", &v1);
    assert!(dated.iter().chain(&v1).all(|s| s.batch.is_some()));
    let all: Vec<Seen> = dated.into_iter().chain(v1).collect();
    report(
        "Azure: 20 on a dated api_version + 10 on v1 (preview), max_size 10",
        &gw,
        &mock,
        &all,
    )
    .await;

    let batches = mock.batches().await;
    assert_eq!(batches.len(), 3, "{batches:#?}");
    let on =
        |model: &str| -> Vec<&Value> { batches.iter().filter(|b| b["model"] == model).collect() };
    // Dated surface: Azure's line form, the Global Batch deployment as the lines' model.
    assert_eq!(on("gpt4o-batch").len(), 2);
    for b in on("gpt4o-batch") {
        assert_eq!(b["endpoint"], "/chat/completions", "{b}");
        assert_eq!(b["lines"], 10);
        assert_eq!(b["status"], "completed");
        assert_eq!(b["metadata"]["created_by"], "llmproxy");
        assert_eq!(b["metadata"]["llmproxy_job"].as_str().unwrap().len(), 32);
    }
    // v1 surface: OpenAI's line form, the deployment's own name.
    assert_eq!(on("gpt4o-v1").len(), 1);
    assert_eq!(on("gpt4o-v1")[0]["endpoint"], "/v1/chat/completions");

    let posts = |path: &'static str| {
        let mock = &mock;
        async move {
            mock.requests_to(path)
                .await
                .into_iter()
                .filter(|r| r["method"] == "POST")
                .collect::<Vec<Value>>()
        }
    };
    // Uploads and creates on Azure's paths, with the api-version and the upstream's own key.
    let uploads = posts("/openai/files").await;
    assert_eq!(uploads.len(), 2);
    let creates = posts("/openai/batches").await;
    assert_eq!(creates.len(), 2);
    for r in uploads.iter().chain(&creates) {
        assert_eq!(r["query"], "api-version=2024-10-21", "{r}");
        assert_eq!(r["headers"]["api-key"], "az-secret", "{r}");
        assert!(r["headers"].get("authorization").is_none(), "{r}");
    }
    for r in &creates {
        let body = r["body_prefix"].as_str().unwrap();
        assert!(body.contains(r#""endpoint":"/chat/completions""#), "{body}");
        assert!(body.contains(r#""llmproxy_job":"#), "{body}");
    }
    let polls: Vec<Value> = mock
        .requests()
        .await
        .into_iter()
        .filter(|r| {
            r["method"] == "GET" && r["path"].as_str().unwrap().starts_with("/openai/batches/")
        })
        .collect();
    assert!(!polls.is_empty());
    assert!(polls.iter().all(|r| r["query"] == "api-version=2024-10-21"));
    let v1_uploads = posts("/openai/v1/files").await;
    assert_eq!(v1_uploads.len(), 1);
    assert_eq!(v1_uploads[0]["query"], "api-version=preview");
    assert_eq!(
        v1_uploads[0]["headers"]["authorization"],
        "Bearer entra-token"
    );
    assert_eq!(posts("/openai/v1/batches").await.len(), 1);
    // Nothing went synchronously.
    assert!(posts("/openai/deployments/gpt4o-std/chat/completions")
        .await
        .is_empty());
    // Every file is deleted once its batch is settled.
    let files: Vec<String> = batches
        .iter()
        .filter(|b| b["model"] == "gpt4o-batch")
        .flat_map(|b| [b["input_file_id"].clone(), b["output_file_id"].clone()])
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    wait_for(
        "the Azure batch files to be deleted",
        Duration::from_secs(10),
        || async {
            for f in &files {
                if mock_status(&mock, &format!("/openai/files/{f}?api-version=2024-10-21")).await
                    != 404
                {
                    return false;
                }
            }
            true
        },
    )
    .await;
    assert_eq!(
        metric(
            &gw.metrics().await,
            "llmproxy_batch_requests_total",
            &[("result", "batched")]
        ),
        Some(30.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_azure_batch_falls_back_to_the_standard_deployment() {
    let mock = Mock::start("AZ");
    mock.echo(true).await;
    mock.batch_config(json!({"outcome": "failed", "complete_after_ms": 200}))
        .await;
    let gw = gateway(&azure_batch_config(&mock, &sqlite_url("azure.db"))).await;
    let seen = burst_to(&gw, "m", "azfail", 10, true, None).await;
    assert_own_answers("azfail", &seen);
    assert!(seen.iter().all(|s| s.batch.is_none()));
    report("Azure failed batch", &gw, &mock, &seen).await;
    let batches = mock.batches().await;
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0]["status"], "failed");
    assert_eq!(batches[0]["model"], "gpt4o-batch");
    let sync: Vec<Value> = mock
        .requests_to("/openai/deployments/gpt4o-std/chat/completions")
        .await;
    assert_eq!(sync.len(), 10);
    assert!(sync.iter().all(|r| r["headers"]["api-key"] == "az-secret"));
    assert!(mock
        .requests_to("/openai/deployments/gpt4o-batch/chat/completions")
        .await
        .is_empty());
}

/// Kill the gateway (SIGKILL) after the upstream created its batch but before the gateway heard
/// back (the mock answers the create 10 minutes late): the journal row is still `creating`. The
/// next gateway on the same database finds the batch by its `metadata.llmproxy_job`, polls it to
/// completion, charges it once at the batch price and deletes its files.
async fn killed_while_creating(database: &str) {
    let mock = Mock::start("A");
    mock.echo(true).await;
    mock.batch_config(json!({"complete_after_ms": 1000, "create_delay_ms": 600_000}))
        .await;
    let template = with_master_key(batch_config(
        &mock,
        database,
        "{max_size: 10, max_wait: 30s, poll_interval: 100ms}",
        "{max_size: 10}",
    ));
    let mut first = gateway(&template).await;
    let batched_key = generate_key(&first).await;
    let sync_key = generate_key(&first).await;
    let url = first.url("/v1/chat/completions");
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..10 {
        let (url, key) = (url.clone(), batched_key.clone());
        clients.spawn(async move {
            let _ = chat(&client(), &url, &format!("create-{i}"), true, Some(&key)).await;
        });
    }
    wait_for(
        "the batch to be created at the upstream",
        Duration::from_secs(20),
        || async { mock.batches().await.len() == 1 },
    )
    .await;
    let b = mock.batches().await[0].clone();
    let jobs = journal_jobs(database).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["state"], "creating", "{jobs:?}");
    assert!(jobs[0]["batch_id"].is_null());
    assert_eq!(jobs[0]["input_file_id"], b["input_file_id"]);
    assert_eq!(b["metadata"]["llmproxy_job"], jobs[0]["job_id"]);
    first.signal(libc::SIGKILL);
    assert!(first.wait_exit(Duration::from_secs(10)).await.is_some());
    while clients.join_next().await.is_some() {}

    let started = Instant::now();
    let second = gateway(&template).await;
    wait_for(
        "the restarted gateway to adopt and finish the batch",
        Duration::from_secs(30),
        || async {
            journal_jobs(database)
                .await
                .iter()
                .all(|j| j["state"] == "done")
        },
    )
    .await;
    let finished_after = started.elapsed();
    let jobs = journal_jobs(database).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["batch_id"], b["id"]);
    assert_eq!(jobs[0]["status"], "completed");
    let batches = mock.batches().await;
    assert_eq!(batches.len(), 1, "no second batch");
    assert_eq!(batches[0]["status"], "completed");
    // Found by listing the upstream's batches (it had completed by then: no poll was needed).
    let lists = mock.requests_to("/v1/batches").await;
    assert!(
        lists
            .iter()
            .any(|r| r["method"] == "GET" && r["query"] == "limit=100"),
        "{lists:?}"
    );
    // Charged once, at the batch price: half the same ten requests synchronously.
    let seen = burst(&second, "create", 10, false, Some(&sync_key)).await;
    assert_own_answers("create", &seen);
    let (batched, sync) = (
        key_spend(&second, &batched_key).await,
        key_spend(&second, &sync_key).await,
    );
    assert!(sync > 0.0);
    assert_half_price(batched, sync, 10);
    for f in [&batches[0]["input_file_id"], &batches[0]["output_file_id"]] {
        let path = format!("/v1/files/{}", f.as_str().unwrap());
        assert_eq!(mock_status(&mock, &path).await, 404, "file {f} still there");
    }
    eprintln!(
        "[batch] killed mid-create ({}): jobs created {}, found by metadata and finished by the \
         second gateway {:.1} s after it started, spend recorded once: batched {batched:.9} USD vs \
         the same requests synchronously {sync:.9} USD, files deleted",
        database.split("://").next().unwrap(),
        batches.len(),
        finished_after.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_creating_the_batch_is_found_by_its_metadata_sqlite() {
    killed_while_creating(&sqlite_url("creating.db")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_creating_the_batch_is_found_by_its_metadata_postgres() {
    let pg = Postgres::start();
    let url = pg.create_db("creating");
    killed_while_creating(&url).await;
}

/// Kill the gateway while its create hangs and never reaches the batch store: the next gateway
/// finds no batch with the job's metadata, deletes the uploaded input file and closes the row
/// (`not_created`); nothing is charged, and batching goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_the_batch_was_created_its_input_file_is_deleted() {
    let mock = Mock::start("A");
    mock.echo(true).await;
    mock.batch_config(json!({"create_hang": true})).await;
    let database = sqlite_url("hang.db");
    let template = with_master_key(batch_config(
        &mock,
        &database,
        "{max_size: 10, max_wait: 30s, poll_interval: 100ms}",
        "{max_size: 10}",
    ));
    let mut first = gateway(&template).await;
    let key = generate_key(&first).await;
    let url = first.url("/v1/chat/completions");
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..10 {
        let (url, key) = (url.clone(), key.clone());
        clients.spawn(async move {
            let _ = chat(&client(), &url, &format!("hang-{i}"), true, Some(&key)).await;
        });
    }
    wait_for(
        "the create to reach the upstream",
        Duration::from_secs(20),
        || async {
            mock.requests_to("/v1/batches")
                .await
                .iter()
                .any(|r| r["method"] == "POST")
        },
    )
    .await;
    let jobs = journal_jobs(&database).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["state"], "creating");
    let file = jobs[0]["input_file_id"].as_str().unwrap().to_string();
    assert_eq!(mock_status(&mock, &format!("/v1/files/{file}")).await, 200);
    first.signal(libc::SIGKILL);
    assert!(first.wait_exit(Duration::from_secs(10)).await.is_some());
    while clients.join_next().await.is_some() {}
    mock.batch_config(json!({"create_hang": null, "complete_after_ms": 300}))
        .await;

    let started = Instant::now();
    let second = gateway(&template).await;
    wait_for("the row to be closed", Duration::from_secs(30), || async {
        journal_jobs(&database).await[0]["state"] == "done"
    })
    .await;
    let resolved_after = started.elapsed();
    let jobs = journal_jobs(&database).await;
    assert_eq!(jobs[0]["status"], "not_created");
    assert!(jobs[0]["batch_id"].is_null());
    assert_eq!(mock_status(&mock, &format!("/v1/files/{file}")).await, 404);
    assert!(mock.batches().await.is_empty());
    assert_eq!(key_spend(&second, &key).await, 0.0);
    // The next gateway batches as usual.
    let seen = burst(&second, "hang", 10, true, Some(&key)).await;
    assert_own_answers("hang", &seen);
    assert!(seen.iter().all(|s| s.batch.is_some()));
    report("after a create that never happened", &second, &mock, &seen).await;
    eprintln!(
        "[batch] killed before the create: jobs created 0, row closed as not_created and input \
         file deleted by the second gateway {:.1} s after it started; nothing charged",
        resolved_after.as_secs_f64()
    );
}

/// The upstream created the batch but its answer was lost (502): the gateway finds the batch by
/// its metadata at once, and its clients are answered from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_answered_5xx_after_it_happened_is_found_and_delivered() {
    let mock = Mock::start("A");
    mock.echo(true).await;
    mock.batch_config(json!({"create_then_fail": 502, "complete_after_ms": 300}))
        .await;
    let database = sqlite_url("lost.db");
    let gw = gateway(&batch_config(
        &mock,
        &database,
        "{max_size: 10, max_wait: 30s, poll_interval: 50ms}",
        "{max_size: 10}",
    ))
    .await;
    let seen = burst(&gw, "lost", 10, true, None).await;
    assert_own_answers("lost", &seen);
    assert!(
        seen.iter().all(|s| s.batch.is_some()),
        "answered from the batch"
    );
    report("create answered 502 after creating", &gw, &mock, &seen).await;
    let batches = mock.batches().await;
    assert_eq!(batches.len(), 1);
    wait_for("the row to be done", Duration::from_secs(10), || async {
        journal_jobs(&database).await[0]["state"] == "done"
    })
    .await;
    let jobs = journal_jobs(&database).await;
    assert_eq!(jobs[0]["batch_id"], batches[0]["id"]);
    assert_eq!(jobs[0]["status"], "completed");
    assert_eq!(
        counter(&gw, "llmproxy_batch_requests_total", ("result", "fallback")).await,
        0.0
    );
}

/// A database journaled by the first version (table keyed by batch id, written after the create)
/// is upgraded in place on PostgreSQL, and its unfinished batch is finished by the new gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_of_the_first_schema_is_upgraded_on_postgres() {
    let mock = Mock::start("A");
    mock.echo(true).await;
    mock.batch_config(json!({"complete_after_ms": 300})).await;
    // A batch the previous version submitted and journaled.
    let line = json!({"custom_id": "c1", "method": "POST", "url": "/v1/chat/completions",
                      "body": chat_body_for("gpt-4o-mini", "old")});
    let b = "old-schema-boundary";
    let body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"old.jsonl\"\r\n\r\n{line}\n\r\n--{b}--\r\n"
    );
    let ct = format!("multipart/form-data; boundary={b}");
    let file: Value = client()
        .post(format!("{}/files", mock.url()))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let batch: Value = client()
        .post(format!("{}/batches", mock.url()))
        .json(
            &json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                      "completion_window": "24h"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pg = Postgres::start();
    let url = pg.create_db("oldschema");
    {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c.batch_execute(
            "CREATE TABLE batch_jobs (
                batch_id TEXT PRIMARY KEY, upstream TEXT NOT NULL, endpoint TEXT NOT NULL,
                model TEXT NOT NULL, input_file_id TEXT NOT NULL, lines TEXT NOT NULL,
                created_ms BIGINT NOT NULL, poll_ms BIGINT NOT NULL, grace_ms BIGINT NOT NULL,
                owner TEXT NOT NULL, lease_until_ms BIGINT NOT NULL, state TEXT NOT NULL,
                status TEXT, finished_ms BIGINT);
             CREATE INDEX batch_jobs_active ON batch_jobs (state, lease_until_ms);",
        )
        .await
        .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        c.execute(
            "INSERT INTO batch_jobs VALUES ($1, 'a', '/v1/chat/completions', 'gpt-4o-mini', $2, \
             '[[\"c1\",null,\"m\",[2.5,10.0,0.5]]]', $3, 100, 600000, 'gone', 0, 'active', \
             'in_progress', NULL)",
            &[
                &batch["id"].as_str().unwrap(),
                &file["id"].as_str().unwrap(),
                &now,
            ],
        )
        .await
        .unwrap();
    }
    let _gw = gateway(&batch_config(
        &mock,
        &url,
        "{max_size: 10, max_wait: 30s, poll_interval: 100ms}",
        "{max_size: 10}",
    ))
    .await;
    wait_for(
        "the upgraded row to be finished",
        Duration::from_secs(30),
        || async {
            journal_jobs(&url)
                .await
                .first()
                .is_some_and(|j| j["state"] == "done")
        },
    )
    .await;
    let jobs = journal_jobs(&url).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["job_id"], batch["id"]);
    assert_eq!(jobs[0]["batch_id"], batch["id"]);
    assert_eq!(jobs[0]["status"], "completed");
    let path = format!("/v1/files/{}", file["id"].as_str().unwrap());
    assert_eq!(mock_status(&mock, &path).await, 404);
}
