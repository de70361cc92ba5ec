//! Bedrock over HTTP: SigV4-signed requests (signed here, step by step, as AWS documents it),
//! the verdict the mock records, Converse and its event stream, embeddings, the control plane.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step should panic"
)]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{get, post_json, recorded, request, Answer};
use hmac::{Hmac, KeyInit, Mac};
use mock_upstream::MockServer;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const KEY: &str = "AKIAMOCKEXAMPLE";
const SECRET: &str = "mock/secret+key";
const HOST: &str = "bedrock-runtime.eu-central-1.amazonaws.com";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// Now as `YYYYMMDDTHHMMSSZ`.
fn amz_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Sign a request (path as sent, already percent-encoded; no query) for service `bedrock`: the
/// headers to send.
fn sign(
    method: &str,
    path: &str,
    body: &str,
    secret: &str,
    token: Option<&str>,
) -> Vec<(String, String)> {
    let date = amz_now();
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("host".to_owned(), HOST.to_owned()),
        ("x-amz-date".to_owned(), date.clone()),
    ];
    if let Some(t) = token {
        headers.push(("x-amz-security-token".to_owned(), t.to_owned()));
    }
    // Non-S3 services: each path segment encoded once more ('%' -> '%25').
    let canonical_path = path.replace('%', "%25");
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let creq = format!(
        "{method}\n{canonical_path}\n\n{canonical_headers}\n{signed}\n{}",
        hex(&Sha256::digest(body.as_bytes()))
    );
    let scope = format!("{}/eu-central-1/bedrock/aws4_request", &date[..8]);
    let sts = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex(&Sha256::digest(creq.as_bytes()))
    );
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in [&date[..8], "eu-central-1", "bedrock", "aws4_request"] {
        key = hmac(&key, part);
    }
    let sig = hex(&hmac(&key, &sts));
    headers.push((
        "authorization".to_owned(),
        format!(
            "AWS4-HMAC-SHA256 Credential={KEY}/{scope}, SignedHeaders={signed}, Signature={sig}"
        ),
    ));
    headers
}

fn send_signed(
    mock: &MockServer,
    method: &str,
    path: &str,
    body: &str,
    secret: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> Answer {
    let headers = sign(method, path, body, secret, token);
    let mut h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    h.extend_from_slice(extra);
    request(mock.addr(), method, path, &h, body.as_bytes())
}

const CONVERSE: &str = r#"{"messages":[{"role":"user","content":[{"text":"Hello"}]}],"inferenceConfig":{"maxTokens":64}}"#;
const PATH: &str = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse";

fn signed_mock(extra: &[&str]) -> MockServer {
    let mut args = vec![
        "--aws-access-key-id",
        KEY,
        "--aws-secret-access-key",
        SECRET,
        "--aws-region",
        "eu-central-1",
    ];
    args.extend_from_slice(extra);
    MockServer::start(&args).unwrap()
}

#[test]
fn signed_converse_is_answered_and_its_verdict_recorded() {
    let mock = signed_mock(&["--chunks", "2"]);
    let a = send_signed(&mock, "POST", PATH, CONVERSE, SECRET, None, &[]);
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.header("x-amzn-requestid").is_some());
    let v = a.json();
    assert_eq!(
        v["output"]["message"]["content"][0]["text"],
        "Hello from mock"
    );
    assert_eq!(v["stopReason"], "end_turn");
    assert_eq!(v["usage"]["outputTokens"], 2);
    let rec = recorded(mock.addr());
    let last = rec.last().unwrap();
    assert_eq!(last["model"], "anthropic.claude-3-haiku-20240307-v1:0");
    assert_eq!(last["auth"]["scheme"], "sigv4");
    assert_eq!(last["auth"]["ok"], true);
    assert_eq!(last["auth"]["access_key_id"], KEY);
    assert_eq!(
        last["auth"]["signed_headers"],
        "content-type;host;x-amz-date"
    );
    assert!(last["auth"]["canonical_request"]
        .as_str()
        .unwrap()
        .contains("/model/anthropic.claude-3-haiku-20240307-v1%253A0/converse"));

    // A wrong secret, a tampered body, no signature at all: AWS's refusals, recorded too.
    let a = send_signed(&mock, "POST", PATH, CONVERSE, "wrong", None, &[]);
    assert_eq!(a.status, 403);
    assert!(a
        .header("x-amzn-errortype")
        .unwrap()
        .starts_with("InvalidSignatureException:"));
    assert!(a.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("The request signature we calculated does not match"));
    let headers = sign("POST", PATH, CONVERSE, SECRET, None);
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let tampered = CONVERSE.replace("Hello", "Hullo");
    let a = request(mock.addr(), "POST", PATH, &h, tampered.as_bytes());
    assert_eq!(a.status, 403);
    let a = post_json(mock.addr(), PATH, &[], CONVERSE);
    assert_eq!(a.status, 403);
    assert!(a
        .header("x-amzn-errortype")
        .unwrap()
        .starts_with("MissingAuthenticationTokenException"));
    let rec = recorded(mock.addr());
    assert_eq!(rec.len(), 4);
    assert_eq!(rec[1]["auth"]["ok"], false);
    assert_eq!(rec[1]["auth"]["error_type"], "InvalidSignatureException");
    assert_eq!(rec[2]["auth"]["ok"], false);
    assert_eq!(
        rec[3]["auth"]["error_type"],
        "MissingAuthenticationTokenException"
    );
}

#[test]
fn session_token_and_control_plane() {
    let mock = signed_mock(&["--aws-session-token", "session/token=="]);
    let ok = send_signed(
        &mock,
        "POST",
        PATH,
        CONVERSE,
        SECRET,
        Some("session/token=="),
        &[],
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    let missing = send_signed(&mock, "POST", PATH, CONVERSE, SECRET, None, &[]);
    assert_eq!(missing.status, 403);
    assert!(missing
        .header("x-amzn-errortype")
        .unwrap()
        .starts_with("UnrecognizedClientException"));
    // ListFoundationModels: a signed GET that spends no tokens (health checks).
    let list = send_signed(
        &mock,
        "GET",
        "/foundation-models",
        "",
        SECRET,
        Some("session/token=="),
        &[],
    );
    assert_eq!(list.status, 200, "{}", list.text());
    let models = list.json()["modelSummaries"].as_array().unwrap().clone();
    assert!(models
        .iter()
        .any(|m| m["modelId"] == "anthropic.claude-3-haiku-20240307-v1:0"));
    assert!(models[0]["modelArn"]
        .as_str()
        .unwrap()
        .starts_with("arn:aws:bedrock:eu-central-1::"));
    let unsigned = get(mock.addr(), "/foundation-models");
    assert_eq!(unsigned.status, 403);
}

/// Decode an event stream, checking both CRCs of each message: `(event type or exception type,
/// message type, payload)`.
fn decode(mut b: &[u8]) -> Result<Vec<(String, String, Value)>, String> {
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 12 || b.len() < be(&b[0..4]) {
            return Err("truncated".to_owned());
        }
        let (total, hlen) = (be(&b[0..4]), be(&b[4..8]));
        if crc32fast::hash(&b[..8]) as usize != be(&b[8..12]) {
            return Err("prelude crc".to_owned());
        }
        if crc32fast::hash(&b[..total - 4]) as usize != be(&b[total - 4..total]) {
            return Err("message crc".to_owned());
        }
        let mut h = &b[12..12 + hlen];
        let (mut kind, mut mtype) = (String::new(), String::new());
        while !h.is_empty() {
            let n = h[0] as usize;
            let name = String::from_utf8_lossy(&h[1..1 + n]).into_owned();
            assert_eq!(h[1 + n], 7, "string header");
            let len = u16::from_be_bytes([h[2 + n], h[3 + n]]) as usize;
            let value = String::from_utf8_lossy(&h[4 + n..4 + n + len]).into_owned();
            match name.as_str() {
                ":event-type" | ":exception-type" => kind = value,
                ":message-type" => mtype = value,
                _ => {}
            }
            h = &h[4 + n + len..];
        }
        let payload = serde_json::from_slice(&b[12 + hlen..total - 4]).unwrap();
        out.push((kind, mtype, payload));
        b = &b[total..];
    }
    Ok(out)
}

#[test]
fn converse_stream_over_http() {
    let mock = MockServer::start(&["--chunks", "3"]).unwrap();
    let path = "/model/amazon.nova-lite-v1%3A0/converse-stream";
    let a = post_json(mock.addr(), path, &[], CONVERSE);
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("content-type"),
        Some("application/vnd.amazon.eventstream")
    );
    assert!(a.complete);
    let events = decode(&a.body).unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "messageStart",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ]
    );
    assert!(events.iter().all(|e| e.1 == "event"));
    assert_eq!(events[6].2["usage"]["outputTokens"], 3);
    assert_eq!(recorded(mock.addr()).last().unwrap()["stream"], true);

    // Dropped after one delta: the connection breaks without the stream's end.
    let a = post_json(
        mock.addr(),
        path,
        &[("x-mock-drop-after-chunks", "1")],
        CONVERSE,
    );
    assert!(!a.complete);
    assert_eq!(decode(&a.body).unwrap().len(), 2);
    // An in-stream exception.
    let a = post_json(
        mock.addr(),
        path,
        &[
            ("x-mock-eventstream-fault", "exception"),
            ("x-mock-eventstream-fault-after", "0"),
        ],
        CONVERSE,
    );
    let events = decode(&a.body).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        (events[1].0.as_str(), events[1].1.as_str()),
        ("throttlingException", "exception")
    );
    // A bad CRC.
    let a = post_json(
        mock.addr(),
        path,
        &[("x-mock-eventstream-fault", "bad-crc")],
        CONVERSE,
    );
    assert_eq!(decode(&a.body).unwrap_err(), "message crc");
}

#[test]
fn failures_embeddings_and_context_length() {
    let mock = MockServer::start(&["--max-input-tokens", "10"]).unwrap();
    let a = post_json(mock.addr(), PATH, &[("x-mock-status", "429")], CONVERSE);
    assert_eq!(a.status, 429);
    assert!(a
        .header("x-amzn-errortype")
        .unwrap()
        .starts_with("ThrottlingException"));
    assert_eq!(
        a.json(),
        json!({"message": "Too many requests, please wait before trying again."})
    );
    // Over --max-input-tokens: Bedrock's context-length answer.
    let long = format!(
        r#"{{"messages":[{{"role":"user","content":[{{"text":"{}"}}]}}]}}"#,
        "word ".repeat(50)
    );
    let a = post_json(mock.addr(), PATH, &[], &long);
    assert_eq!(a.status, 400);
    assert_eq!(
        a.json()["message"],
        "Input is too long for requested model."
    );
    let a = post_json(
        mock.addr(),
        "/model/amazon.titan-embed-text-v2%3A0/invoke",
        &[],
        r#"{"inputText":"hello","dimensions":512}"#,
    );
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["embedding"].as_array().unwrap().len(), 512);
    assert_eq!(a.header("x-amzn-bedrock-input-token-count"), Some("1"));
    // The global fail switch.
    assert_eq!(
        request(mock.addr(), "POST", "/__mock/fail?status=503", &[], b"").status,
        200
    );
    let a = post_json(mock.addr(), PATH, &[], CONVERSE);
    assert_eq!(a.status, 503);
    assert!(a
        .header("x-amzn-errortype")
        .unwrap()
        .starts_with("ServiceUnavailableException"));
}
