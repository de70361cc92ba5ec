//! `llmproxy --test` and `llmproxy --health`: one call to a gateway that is already
//! running, for people checking their setup from a second shell.
//!
//! `--test` sends one chat completion and returns the answer's text; `--health` returns the
//! LiteLLM's report `{"healthy_endpoints": [...], "unhealthy_endpoints": [...]}` from the admin
//! listener's `/health/upstreams` (or, when the admin listener does not answer, a client
//! listener's `/health` if it serves that report).

use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Where the running gateway is and how to talk to it.
#[derive(Debug, Clone)]
pub struct Target {
    /// A client listener, e.g. `127.0.0.1:4000`.
    pub listener: SocketAddr,
    /// The admin listener, e.g. `127.0.0.1:9000`.
    pub admin: SocketAddr,
    /// Sent as `Authorization: Bearer` to the client listener (the master key, when one is set).
    pub key: Option<String>,
    /// Sent as `Authorization: Bearer` to the admin listener (`admin.token`).
    pub admin_token: Option<String>,
    /// How long the test request may take.
    pub timeout: Duration,
}

/// The prompt of `--test` (LiteLLM's).
pub const TEST_PROMPT: &str = "this is a test request, write a short poem";

/// A listening address as a destination: the wildcard (`0.0.0.0`, `::`) is this host.
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// A transport error with its causes ("connection refused"), which reqwest's own text leaves out.
fn describe(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(&format!(": {text}"));
        }
        source = s.source();
    }
    if e.is_connect() {
        out.push_str(" (is llmproxy running there?)");
    } else if e.is_timeout() {
        out.push_str(" (timed out)");
    }
    out
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{}{path}", reachable(addr))
}

fn with_key(req: reqwest::RequestBuilder, key: &Option<String>) -> reqwest::RequestBuilder {
    match key {
        Some(k) => req.bearer_auth(k),
        None => req,
    }
}

/// The message of an OpenAI-shaped error body, else the body.
fn error_text(status: reqwest::StatusCode, body: &str) -> String {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    format!("HTTP {status}: {message}")
}

/// `--test`: one chat completion to `model` (else the first model of `GET /v1/models`); the
/// model asked and the answer's text (the whole message as JSON when it has no text).
pub async fn test(target: &Target, model: Option<&str>) -> Result<(String, String), String> {
    let c = client(target.timeout)?;
    let model = match model {
        Some(m) => m.to_string(),
        None => first_model(&c, target).await?,
    };
    let endpoint = url(target.listener, "/v1/chat/completions");
    let body = json!({"model": model, "messages": [{"role": "user", "content": TEST_PROMPT}]});
    let resp = with_key(c.post(&endpoint).json(&body), &target.key)
        .send()
        .await
        .map_err(|e| format!("POST {endpoint}: {}", describe(&e)))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| format!("POST {endpoint}: reading the answer: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "POST {endpoint} (model `{model}`): {}",
            error_text(status, &text)
        ));
    }
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| format!("POST {endpoint}: the answer is not JSON: {e}"))?;
    let message = &v["choices"][0]["message"];
    let answer = match message["content"].as_str() {
        Some(t) => t.to_string(),
        None if message.is_object() => message.to_string(),
        None => return Err(format!("POST {endpoint}: no choices in the answer: {text}")),
    };
    Ok((model, answer))
}

async fn first_model(c: &reqwest::Client, target: &Target) -> Result<String, String> {
    let endpoint = url(target.listener, "/v1/models");
    let resp = with_key(c.get(&endpoint), &target.key)
        .send()
        .await
        .map_err(|e| format!("GET {endpoint}: {}", describe(&e)))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| format!("GET {endpoint}: {e}"))?;
    if !status.is_success() {
        return Err(format!("GET {endpoint}: {}", error_text(status, &text)));
    }
    let v: Value =
        serde_json::from_str(&text).map_err(|e| format!("GET {endpoint}: not JSON: {e}"))?;
    v["data"][0]["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("GET {endpoint}: the gateway serves no models"))
}

/// `--health`: the running gateway's upstream health report.
pub async fn health(target: &Target) -> Result<Value, String> {
    let c = client(Duration::from_secs(10))?;
    let admin = url(target.admin, "/health/upstreams");
    let admin_err = match with_key(c.get(&admin), &target.admin_token).send().await {
        Ok(resp) => {
            let status = resp.status();
            let text = resp.text().await.map_err(|e| format!("GET {admin}: {e}"))?;
            if status.is_success() {
                return serde_json::from_str(&text)
                    .map_err(|e| format!("GET {admin}: not JSON: {e}"));
            }
            format!("GET {admin}: {}", error_text(status, &text))
        }
        Err(e) => format!("GET {admin}: {}", describe(&e)),
    };
    // A client listener that serves the report itself (LiteLLM's `/health`).
    let main = url(target.listener, "/health");
    if let Ok(resp) = with_key(c.get(&main), &target.key).send().await {
        if resp.status().is_success() {
            if let Ok(v) = resp.json::<Value>().await {
                if v.get("healthy_endpoints").is_some() {
                    return Ok(v);
                }
            }
        }
    }
    Err(admin_err)
}
