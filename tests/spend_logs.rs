//! Issue: exact cost and spend logs, through the real gateway against SQLite and a real PostgreSQL:
//! cached prompt tokens, cache writes and reasoning tokens priced exactly with the built-in table
//! (OpenAI- and Anthropic-shaped usage through the gateway; Bedrock- and Gemini-shaped usage
//! through the price arithmetic with hand-written figures), a model with no price warned about and
//! counted, one spend-log row per request under 1,000 concurrent requests, the filters and the
//! report, and a virtual key reading none of it.
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
use llmproxy::pricing::{self, BedrockCounts, GeminiCounts, Micros, PriceTable, TokenUsage};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn models(openai: &Mock, anthropic: &Mock) -> String {
    let anthropic_upstream = format!(
        "  - {{name: an, provider: anthropic, url: \"{}\", auth: {{type: header, name: x-api-key, value: sk-ant-upstream}}}}\n",
        anthropic.url()
    );
    format!(
        "upstreams:\n{}{anthropic_upstream}models:\n  - {{name: gpt, deployments: [{{upstream: oa, model: gpt-4o}}]}}\n  - {{name: claude, deployments: [{{upstream: an, model: claude-sonnet-4-5}}]}}\n  - {{name: mine, deployments: [{{upstream: oa, model: my-own-finetune}}]}}\n",
        openai_upstream("oa", openai),
    )
}

/// The micro-dollars of one row.
fn micros(row: &Value) -> u64 {
    row["spend_micros"].as_u64().unwrap()
}

async fn suite(database: &str) {
    let oa = Mock::start("openai");
    let an = Mock::start("anthropic");
    let (gw, log) = gateway_with_log(
        &keyed(
            database,
            &models(&oa, &an),
            "",
            "keys: {spend_flush: 200ms}\n",
        ),
        &[],
    )
    .await;
    let team = {
        let (s, v) = manage(&gw, "POST", "/team/new", json!({"team_id": "platform"})).await;
        assert_eq!(s, 200, "{v}");
        v["team_id"].as_str().unwrap().to_string()
    };
    let key = new_key(&gw, json!({"team_id": team})).await;
    let key_id = key_id_of(&gw, &key).await;

    // --- OpenAI-shaped usage, gpt-4o at the built-in price ($2.50 input, $1.25 cached, $10
    // output): 1,000 uncached + 4,000 cached prompt tokens, 5 + 300 reasoning output tokens.
    let r = chat_as(
        &gw,
        &key,
        "gpt",
        Some("alice"),
        &[
            ("x-mock-prompt-tokens", "1000"),
            ("x-mock-cache-read-tokens", "4000"),
            ("x-mock-reasoning-tokens", "300"),
            ("x-request-id", "req-openai-1"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], 5000);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 4000);
    // 1,000 × 2.5 + 4,000 × 1.25 + 305 × 10 = 2,500 + 5,000 + 3,050 micro-dollars.
    let openai_cost = 10_550;
    // --- Anthropic-shaped usage (translated to the OpenAI chat answer), claude-sonnet-4-5 ($3
    // input, $0.30 cache read, $3.75 cache write, $15 output): 1,000 uncached input tokens, 20,000
    // read from the cache, 2,000 written to it, 10 output tokens.
    let r = chat_as(
        &gw,
        &key,
        "claude",
        None,
        &[
            ("x-mock-prompt-tokens", "1000"),
            ("x-mock-cache-read-tokens", "20000"),
            ("x-mock-cache-write-tokens", "2000"),
            ("x-mock-chunks", "10"),
            ("x-request-id", "req-anthropic-1"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    // The OpenAI-facing numbers: the cache reads and writes are part of the prompt.
    assert_eq!(v["usage"]["prompt_tokens"], 23000);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 20000);
    // 1,000 × 3 + 20,000 × 0.3 + 2,000 × 3.75 + 10 × 15 = 3,000 + 6,000 + 7,500 + 150.
    let anthropic_cost = 16_650;
    // The same through a stream.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .header("x-mock-prompt-tokens", "1000")
        .header("x-mock-cache-read-tokens", "20000")
        .header("x-mock-cache-write-tokens", "2000")
        .header("x-mock-chunks", "10")
        .header("x-request-id", "req-anthropic-stream")
        .json(&json!({"model": "claude", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.text().await.unwrap();
    // An OpenAI stream whose client asks no usage: the gateway asks the upstream for it on its own
    // behalf (the key has a budget to book) and keeps the usage event from the client.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .header("x-mock-prompt-tokens", "1000")
        .header("x-mock-cache-read-tokens", "4000")
        .header("x-mock-reasoning-tokens", "300")
        .header("x-request-id", "req-openai-stream")
        .json(&json!({"model": "gpt", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let streamed = r.text().await.unwrap();
    assert!(streamed.contains("data: [DONE]"), "{streamed}");
    assert!(
        !streamed.contains("\"usage\":{"),
        "usage the client did not ask for: {streamed}"
    );

    let rows = wait_spend_logs(&gw, &format!("key={key_id}"), 4).await;
    let by_id = |id: &str| -> Value {
        rows["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["request_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no row {id} in {rows}"))
    };
    let row = by_id("req-openai-1");
    assert_eq!(micros(&row), openai_cost, "{row}");
    assert_eq!(
        (
            &row["prompt_tokens"],
            &row["cached_tokens"],
            &row["completion_tokens"],
            &row["reasoning_tokens"]
        ),
        (&json!(5000), &json!(4000), &json!(305), &json!(300))
    );
    assert_eq!(row["key_id"], key_id.as_str());
    assert_eq!(row["team_id"], "platform");
    assert_eq!(row["user"], "alice");
    assert_eq!(row["model"], "gpt");
    assert_eq!(row["deployment"], "oa");
    assert_eq!(row["status"], 200);
    assert_eq!(row["cache_hit"], false);
    assert_eq!(row["priced"], true);
    let row = by_id("req-anthropic-1");
    assert_eq!(micros(&row), anthropic_cost, "{row}");
    assert_eq!(
        (&row["cached_tokens"], &row["cache_write_tokens"]),
        (&json!(20000), &json!(2000))
    );
    assert_eq!(micros(&by_id("req-anthropic-stream")), anthropic_cost);
    let row = by_id("req-openai-stream");
    assert_eq!(micros(&row), openai_cost, "{row}");
    assert_eq!(
        (
            &row["prompt_tokens"],
            &row["cached_tokens"],
            &row["reasoning_tokens"]
        ),
        (&json!(5000), &json!(4000), &json!(300))
    );
    // The key's and the team's spend are exactly the sum.
    let total = 2 * openai_cost + 2 * anthropic_cost;
    let t = Instant::now();
    loop {
        let (_, k) = manage(&gw, "GET", &format!("/key/info?key={key_id}"), Value::Null).await;
        let (_, tm) = manage(&gw, "GET", "/team/info?team_id=platform", Value::Null).await;
        if k["info"]["spend"] == json!(total as f64 / 1e6)
            && tm["team_info"]["spend"] == json!(total as f64 / 1e6)
        {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{k} {tm}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // --- a model with no price: warned about once, counted, never priced at zero silently ---
    for _ in 0..3 {
        assert_eq!(chat_as(&gw, &key, "mine", None, &[]).await.status(), 200);
    }
    // Counted when the request is logged, just after its answer reached the client: wait for it.
    let t = Instant::now();
    loop {
        let m = gw.metrics().await;
        let n = metric(&m, "llmproxy_unpriced_requests_total", &[("model", "mine")]);
        if n == Some(3.0) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5) && n.unwrap_or(0.0) <= 3.0,
            "{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let warned = wait_for_line(&log, "no price for model `my-own-finetune`").await;
    assert!(warned.contains("openai"), "{warned}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("no price for model `my-own-finetune`").count(),
        1
    );
    let rows = wait_spend_logs(&gw, "model=mine", 3).await;
    for r in rows["data"].as_array().unwrap() {
        assert_eq!((micros(r), &r["priced"]), (0, &json!(false)), "{r}");
    }

    // --- 1,000 concurrent requests: one row each ---
    let burst = new_key(&gw, json!({})).await;
    let burst_id = key_id_of(&gw, &burst).await;
    let mut all = Vec::new();
    for i in 0..1000 {
        let (url, k) = (gw.url("/v1/chat/completions"), burst.clone());
        all.push(tokio::spawn(async move {
            client()
                .post(url)
                .header("authorization", format!("Bearer {k}"))
                .header("x-mock-prompt-tokens", "10")
                .json(&json!({"model": "gpt", "user": format!("u{}", i % 7),
                              "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }));
    }
    let mut ok = 0;
    for t in all {
        if t.await.unwrap() == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 1000);
    let rows = wait_spend_logs(&gw, &format!("key={burst_id}&page_size=1000"), 1000).await;
    let mut ids: Vec<&str> = rows["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1000, "every request has its own row");
    // 10 × 2.5 + 5 × 10 = 75 micro-dollars each.
    assert!(rows["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| micros(r) == 75));
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "llmproxy_spend_log_rows_total",
            &[("result", "dropped")]
        ),
        Some(0.0)
    );

    // --- filters, pagination, date range, the report ---
    let v = wait_spend_logs(&gw, &format!("key={burst_id}&user=u3"), 143).await;
    assert!(v["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["user"] == "u3"));
    let (_, p) = manage(
        &gw,
        "GET",
        &format!("/spend/logs?key={burst}&page=2&page_size=300"),
        Value::Null,
    )
    .await;
    assert_eq!(
        (
            p["page"].clone(),
            p["total_pages"].clone(),
            p["data"].as_array().unwrap().len()
        ),
        (json!(2), json!(4), 300),
        "a secret names its key too"
    );
    wait_spend_logs(&gw, "team_id=platform", 7).await;
    let today = &p["data"][0]["startTime"].as_str().unwrap()[..10];
    wait_spend_logs(
        &gw,
        &format!("key={burst_id}&start_date={today}&end_date={today}"),
        1000,
    )
    .await;
    wait_spend_logs(&gw, &format!("key={burst_id}&end_date=2000-01-01"), 0).await;
    let (s, v) = manage(&gw, "GET", "/spend/logs?start_date=yesterday", Value::Null).await;
    assert_eq!((s, v["error"]["param"].as_str()), (400, Some("start_date")));
    let (s, report) = manage(&gw, "GET", "/global/spend/report?group_by=key", Value::Null).await;
    assert_eq!(s, 200, "{report}");
    let day = &report.as_array().unwrap()[0];
    assert_eq!(day["group_by_day"], today);
    let burst_row = day["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"] == burst_id.as_str())
        .unwrap();
    assert_eq!(
        (
            burst_row["spend_micros"].clone(),
            burst_row["requests"].clone()
        ),
        (json!(75_000), json!(1000))
    );
    let (_, report) = manage(&gw, "GET", "/global/spend/report", Value::Null).await;
    let teams = report[0]["teams"].as_array().unwrap();
    let platform = teams.iter().find(|t| t["team"] == "platform").unwrap();
    assert_eq!(platform["spend_micros"], json!(total));
    let (_, report) = manage(
        &gw,
        "GET",
        "/global/spend/report?group_by=model",
        Value::Null,
    )
    .await;
    assert!(report[0]["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["model"] == "claude"));

    // --- a virtual key reads none of it; no secret in any of it ---
    for path in [
        "/spend/logs",
        "/global/spend/report",
        "/audit/logs",
        "/team/list",
        "/customer/list",
        "/key/list",
    ] {
        let (s, v) = manage_as(&gw, &key, "GET", path, Value::Null).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (403, Some("master_key_required")),
            "{path}"
        );
    }
    let (_, all_rows) = manage(&gw, "GET", "/spend/logs?page_size=1000", Value::Null).await;
    let text = all_rows.to_string();
    for secret in [
        &key,
        &burst,
        &MASTER.to_string(),
        &"sk-up-oa".to_string(),
        &"sk-ant-upstream".to_string(),
    ] {
        assert!(!text.contains(secret.as_str()), "a secret in the spend log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_logs_against_sqlite() {
    let db = tmp_path("spend.db");
    suite(&format!("sqlite://{}", db.display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_logs_against_postgres() {
    let pg = Postgres::start();
    let url = pg.create_db("spend_logs");
    suite(&url).await;
}

/// Bedrock's and Gemini's usage shapes, priced exactly with the built-in table (the gateway's
/// providers for them convert their usage with these constructors).
#[test]
fn bedrock_and_gemini_cached_tokens_are_priced_exactly() {
    let table = PriceTable::builtin();
    // Claude 3.5 Haiku on Bedrock: $0.80 input, $0.08 cache read, $1.00 cache write, $4 output.
    let price = table
        .lookup("bedrock", "anthropic.claude-3-5-haiku-20241022-v1:0")
        .unwrap();
    let usage = TokenUsage::from_bedrock(BedrockCounts {
        input_tokens: 1_200,
        cache_read_input_tokens: 50_000,
        cache_write_input_tokens: 8_000,
        output_tokens: 700,
    });
    // 1,200 × 0.8 + 50,000 × 0.08 + 8,000 × 1 + 700 × 4 = 960 + 4,000 + 8,000 + 2,800.
    assert_eq!(pricing::cost(price, &usage, false), Micros(15_760));
    // Through the Batch API: half of it.
    assert_eq!(pricing::cost(price, &usage, true), Micros(7_880));

    // Gemini 2.5 Flash: $0.30 input, $0.03 cached, $2.50 output; thinking billed as output.
    let price = table.lookup("gemini", "gemini-2.5-flash").unwrap();
    let usage = TokenUsage::from_gemini(GeminiCounts {
        prompt_token_count: 10_000,
        cached_content_token_count: 6_000,
        tool_use_prompt_token_count: 0,
        candidates_token_count: 400,
        thoughts_token_count: 1_600,
    });
    // (10,000 − 6,000) × 0.3 + 6,000 × 0.03 + (400 + 1,600) × 2.5 = 1,200 + 180 + 5,000.
    assert_eq!(pricing::cost(price, &usage, false), Micros(6_380));
    // Vertex AI has the same prices.
    let vertex = table.lookup("vertex", "gemini-2.5-flash").unwrap();
    assert_eq!(pricing::cost(vertex, &usage, false), Micros(6_380));
}
