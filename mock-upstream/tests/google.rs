//! Gemini and Vertex AI over HTTP: API keys, SSE streams, Google's errors, and the service-account
//! flow (a JWT signed here with the test key, exchanged at the mock's `/token`, used on Vertex).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step should panic"
)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::{get, post_json, recorded, request};
use mock_upstream::{gcp_test_key, MockServer};
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde_json::{json, Value};

const GEN: &str = "/v1beta/models/gemini-2.5-flash:generateContent";
const REQ: &str = r#"{"contents":[{"role":"user","parts":[{"text":"Hello"}]}]}"#;
const EMAIL: &str = "gateway@mock-project.iam.gserviceaccount.com";

#[test]
fn gemini_api_keys() {
    let mock = MockServer::start(&["--gemini-api-key", "AIza-mock"]).unwrap();
    let a = post_json(mock.addr(), GEN, &[("x-goog-api-key", "AIza-mock")], REQ);
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.json()["candidates"][0]["content"]["parts"][0]["text"],
        "Hello from mock"
    );
    let a = post_json(mock.addr(), &format!("{GEN}?key=AIza-mock"), &[], REQ);
    assert_eq!(a.status, 200);
    let a = post_json(mock.addr(), GEN, &[("x-goog-api-key", "AIza-wrong")], REQ);
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(a.json()["error"]["details"][0]["reason"], "API_KEY_INVALID");
    let a = post_json(mock.addr(), GEN, &[], REQ);
    assert_eq!(a.status, 403);
    assert_eq!(a.json()["error"]["status"], "PERMISSION_DENIED");
    let rec = recorded(mock.addr());
    assert_eq!(rec[0]["model"], "gemini-2.5-flash");
    assert_eq!(
        rec[0]["auth"],
        json!({"scheme": "api_key", "ok": true, "source": "header"})
    );
    assert_eq!(rec[1]["auth"]["source"], "query");
    assert_eq!(rec[2]["auth"]["ok"], false);
    // The model list, for health checks.
    let a = request(
        mock.addr(),
        "GET",
        "/v1beta/models",
        &[("x-goog-api-key", "AIza-mock")],
        b"",
    );
    assert_eq!(a.status, 200);
    assert!(a.json()["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "models/gemini-2.5-flash"));
    // OpenAI's model list is still OpenAI's.
    assert_eq!(
        get(mock.addr(), "/v1/models").json()["data"][0]["id"],
        "mock-model"
    );
}

#[test]
fn gemini_stream_errors_and_limits() {
    let mock = MockServer::start(&["--chunks", "3", "--max-input-tokens", "20"]).unwrap();
    let key = [("x-goog-api-key", "k")];
    let a = post_json(
        mock.addr(),
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        &key,
        REQ,
    );
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("text/event-stream"));
    let text = a.text();
    let events: Vec<Value> = text
        .split("\r\n\r\n")
        .filter(|e| !e.is_empty())
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    assert_eq!(events.len(), 3);
    assert_eq!(events[2]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(events[2]["usageMetadata"]["candidatesTokenCount"], 3);
    // Google's errors.
    let a = post_json(
        mock.addr(),
        GEN,
        &[("x-goog-api-key", "k"), ("x-mock-status", "429")],
        REQ,
    );
    assert_eq!(a.status, 429);
    assert_eq!(a.json()["error"]["status"], "RESOURCE_EXHAUSTED");
    let a = post_json(mock.addr(), GEN, &key, r#"{"contents":[]}"#);
    assert_eq!(a.status, 400);
    let long = format!(
        r#"{{"contents":[{{"parts":[{{"text":"{}"}}]}}]}}"#,
        "x".repeat(200)
    );
    let a = post_json(mock.addr(), GEN, &key, &long);
    assert_eq!(a.status, 400);
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("The input token count ("));
    let a = post_json(
        mock.addr(),
        GEN,
        &[("x-goog-api-key", "k"), ("x-mock-gemini-block", "prompt")],
        REQ,
    );
    assert_eq!(a.json()["promptFeedback"]["blockReason"], "SAFETY");
}

/// A JWT bearer assertion for the test service account, signed with its private key.
fn assertion(aud: &str, scope: &str, lifetime: i64) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let pem: String = gcp_test_key::PRIVATE_KEY_PEM
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(pem)
        .unwrap();
    let key = RsaKeyPair::from_pkcs8(&der).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims =
        json!({"iss": EMAIL, "scope": scope, "aud": aud, "iat": now, "exp": now + lifetime});
    let signed = format!(
        "{}.{}",
        b64(br#"{"alg":"RS256","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        signed.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{signed}.{}", b64(&sig))
}

fn token(mock: &MockServer, jwt: &str) -> common::Answer {
    let form =
        format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={jwt}");
    let host = mock.addr().to_string();
    request(
        mock.addr(),
        "POST",
        "/token",
        &[
            ("host", &host),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        form.as_bytes(),
    )
}

#[test]
fn vertex_service_account_flow() {
    let mock = MockServer::start(&[
        "--gcp-sa-public-key",
        gcp_test_key::PUBLIC_KEY_PATH,
        "--gcp-sa-email",
        EMAIL,
        "--gcp-token-ttl",
        "1",
        "--chunks",
        "2",
    ])
    .unwrap();
    let token_uri = format!("http://{}/token", mock.addr());
    let sa: Value =
        serde_json::from_str(&gcp_test_key::service_account_json(EMAIL, &token_uri)).unwrap();
    assert_eq!(sa["token_uri"], token_uri.as_str());
    let path = "/v1/projects/mock-project/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent";
    // No token, then a wrong one.
    let a = post_json(mock.addr(), path, &[], REQ);
    assert_eq!(a.status, 401);
    assert_eq!(a.json()["error"]["status"], "UNAUTHENTICATED");
    let a = post_json(
        mock.addr(),
        path,
        &[("authorization", "Bearer ya29.made-up")],
        REQ,
    );
    assert_eq!(a.status, 401);
    // The grant: a bad scope is refused; a good assertion gets a token.
    let a = token(
        &mock,
        &assertion(
            &token_uri,
            "https://www.googleapis.com/auth/userinfo.email",
            3600,
        ),
    );
    assert_eq!(
        (a.status, a.json()["error"].as_str()),
        (400, Some("invalid_scope")),
        "{}",
        a.text()
    );
    let a = token(
        &mock,
        &assertion(
            &token_uri,
            "https://www.googleapis.com/auth/cloud-platform",
            3600,
        ),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    assert_eq!(v["expires_in"], 1);
    let bearer = format!("Bearer {}", v["access_token"].as_str().unwrap());
    let a = post_json(mock.addr(), path, &[("authorization", &bearer)], REQ);
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["text"],
        "Hello from mock"
    );
    assert!(v["createTime"].is_string());
    let stream = path.replace(":generateContent", ":streamGenerateContent?alt=sse");
    let a = post_json(mock.addr(), &stream, &[("authorization", &bearer)], REQ);
    assert_eq!(a.text().matches("\r\n\r\n").count(), 2);
    let predict = "/v1/projects/mock-project/locations/us-central1/publishers/google/models/text-embedding-005:predict";
    let a = post_json(
        mock.addr(),
        predict,
        &[("authorization", &bearer)],
        r#"{"instances":[{"content":"hi"}]}"#,
    );
    assert_eq!(
        a.json()["predictions"][0]["embeddings"]["values"]
            .as_array()
            .unwrap()
            .len(),
        768
    );
    let stats = get(mock.addr(), "/__mock/stats").json();
    assert_eq!(stats["token_grants"], 1);
    let rec = recorded(mock.addr());
    let grant = rec
        .iter()
        .find(|r| r["path"] == "/token" && r["auth"]["ok"] == true)
        .unwrap();
    assert_eq!(grant["auth"]["iss"], EMAIL);
    assert_eq!(grant["auth"]["signature_verified"], true);
    assert_eq!(rec.last().unwrap()["auth"]["issued_by_mock"], true);
    // The token expires after its TTL.
    std::thread::sleep(Duration::from_millis(1100));
    let a = post_json(mock.addr(), path, &[("authorization", &bearer)], REQ);
    assert_eq!(a.status, 401);
    assert_eq!(
        a.json()["error"]["details"][0]["reason"],
        "ACCESS_TOKEN_EXPIRED"
    );
    // The metadata server issues tokens too.
    let a = request(
        mock.addr(),
        "GET",
        "/computeMetadata/v1/instance/service-accounts/default/token",
        &[("metadata-flavor", "Google")],
        b"",
    );
    assert_eq!(a.status, 200);
    assert_eq!(get(mock.addr(), "/__mock/stats").json()["token_grants"], 2);
}
