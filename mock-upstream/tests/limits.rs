//! The rate limits over HTTP: the sliding-window mode and its runtime switch.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step should panic"
)]

mod common;

use common::{post_json, request};
use mock_upstream::MockServer;
use serde_json::json;

#[test]
fn sliding_window_limits_over_http() {
    let mock = MockServer::start(&["--rpm", "180", "--limit-mode", "sliding"]).unwrap();
    let chat = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#;
    // 3 requests per second: the fourth at once is refused, with OpenAI's headers.
    for _ in 0..3 {
        assert_eq!(
            post_json(mock.addr(), "/v1/chat/completions", &[], chat).status,
            200
        );
    }
    let a = post_json(mock.addr(), "/v1/chat/completions", &[], chat);
    assert_eq!(a.status, 429);
    assert_eq!(a.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(a.header("x-ratelimit-limit-requests"), Some("180"));
    assert_eq!(a.header("x-ratelimit-remaining-requests"), Some("0"));
    assert!(a.header("retry-after-ms").is_some());
    let limits = request(mock.addr(), "POST", "/__mock/limits?mode=bucket", &[], b"").json();
    assert_eq!(
        limits,
        json!({"ok": true, "rpm": 180, "tpm": 0, "mode": "bucket"})
    );
    let limits = request(
        mock.addr(),
        "POST",
        "/__mock/limits?mode=sliding&rpm=60",
        &[],
        b"",
    )
    .json();
    assert_eq!(limits["mode"], "sliding");
    assert_eq!(
        request(mock.addr(), "POST", "/__mock/limits?mode=leaky", &[], b"").status,
        400
    );
}
