//! Hostile-client findings, each through the real binary: ambiguous bodies (one `model` reaches the
//! upstream), and the rest of the reliability issue's rows as they are fixed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

/// A body naming `model` twice (or in another case, or escaped) is refused before any upstream
/// sees it: parsers disagree on which one wins, so the authorised model might not be the one used.
#[tokio::test]
async fn ambiguous_model_fields_are_refused() {
    let a = Mock::start("A");
    let gw = gateway(
        &config(&format!(
            "upstreams:\n{}models:\n  - {{name: allowed, deployments: [{{upstream: a, model: allowed}}]}}\n  - {{name: forbidden, deployments: [{{upstream: a, model: forbidden}}]}}\n",
            upstream("a", &a)
        ))
        .replace(
            "listeners: [{name: main, listen: \"127.0.0.1:{PORT}\"}]",
            "listeners: [{name: main, listen: \"127.0.0.1:{PORT}\", models: [allowed]}]",
        ),
    )
    .await;
    a.reset().await;
    for body in [
        r#"{"model":"forbidden","model":"allowed","messages":[]}"#,
        r#"{"model":"allowed","Model":"forbidden","messages":[]}"#,
        r#"{"MODEL":"forbidden","model":"allowed","messages":[]}"#,
        r#"{"mod\u0065l":"forbidden","messages":[],"model":"allowed"}"#,
        r#"{"model":"allowed","messages":[],"messages":[{"role":"user","content":"x"}]}"#,
    ] {
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_openai_error(r, 400, "invalid_request").await;
    }
    assert!(
        a.requests().await.is_empty(),
        "nothing reached the upstream"
    );
    // One (escaped) `model` is fine.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(r#"{"mod\u0065l":"allowed","messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
