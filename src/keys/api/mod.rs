//! The management endpoints in LiteLLM's shapes (master key only: the caller checks it), answering
//! JSON with USD amounts (kept exactly in micro-dollars underneath).
//!
//! | prefix | module | endpoints |
//! | --- | --- | --- |
//! | `/key/` | [`keys`] | `generate`, `info`, `list`, `update`, `delete` |
//! | `/team/` | [`accounts`] | `new`, `info`, `list`, `update`, `delete` |
//! | `/customer/` | [`accounts`] | `new`, `info`, `list`, `update`, `delete`, `block`, `unblock` |
//! | `/spend/logs`, `/global/spend/report` | [`logs`] | the spend log and the daily report |
//! | `/audit/logs` | [`logs`] | the audit log |
//!
//! Bad input answers 400 `invalid_request`; something that does not exist 404 (`key_not_found`,
//! `team_not_found`, `customer_not_found`); an id already in use 409 `already_exists`; a database
//! failure 503 `state_unavailable`. Every change is recorded in the audit log with its actor.

mod accounts;
mod keys;
mod logs;

use super::audit::Actor;
use super::{material, units, Keys, StoreError};
use crate::pricing::Micros;
use serde_json::{json, Map, Value};

/// Why a management call failed.
#[derive(Debug)]
enum ApiError {
    BadRequest {
        message: String,
        param: Option<String>,
    },
    NotFound {
        code: &'static str,
        message: String,
        param: &'static str,
    },
    Exists(String),
    Store(StoreError),
    NoRoute,
    Method,
}

impl ApiError {
    fn bad(message: impl Into<String>, param: &str) -> ApiError {
        ApiError::BadRequest {
            message: message.into(),
            param: Some(param.to_string()),
        }
    }

    fn key_not_found(k: &str) -> ApiError {
        ApiError::NotFound {
            code: "key_not_found",
            message: format!("key not found: {}", printable(k)),
            param: "key",
        }
    }

    fn into_response(self) -> (u16, Value) {
        let (status, kind, code, message, param) = match self {
            ApiError::BadRequest { message, param } => (
                400,
                "invalid_request_error",
                "invalid_request",
                message,
                param,
            ),
            ApiError::NotFound {
                code,
                message,
                param,
            } => (
                404,
                "invalid_request_error",
                code,
                message,
                Some(param.to_string()),
            ),
            ApiError::Exists(message) => (
                409,
                "invalid_request_error",
                "already_exists",
                message,
                None,
            ),
            ApiError::Store(e) => {
                log::error!("{e}");
                (
                    503,
                    "server_error",
                    "state_unavailable",
                    "the key database is unavailable".to_string(),
                    None,
                )
            }
            ApiError::NoRoute => (
                404,
                "invalid_request_error",
                "not_found",
                "unknown management endpoint".to_string(),
                None,
            ),
            ApiError::Method => (
                405,
                "invalid_request_error",
                "method_not_allowed",
                "method not allowed for this endpoint".to_string(),
                None,
            ),
        };
        (
            status,
            json!({"error": {"message": message, "type": kind, "param": param, "code": code}}),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Store(e)
    }
}

/// What a caller named a key by, shortened for error messages (a secret is never echoed whole).
fn printable(k: &str) -> String {
    if k.starts_with(material::PREFIX) && k.len() > 7 {
        format!("{}...", &k[..7])
    } else {
        k.chars().take(70).collect()
    }
}

/// Whether `path` (with or without `/v1`) is one of the management endpoints [`handle`] serves.
pub fn is_management_path(path: &str) -> bool {
    let p = path.strip_prefix("/v1").unwrap_or(path);
    ["/key/", "/team/", "/customer/", "/audit/"]
        .iter()
        .any(|prefix| p.starts_with(prefix))
        || p == "/spend/logs"
        || p == "/spend/logs/"
        || p == "/global/spend/report"
        || p == "/global/spend/report/"
}

/// Serves one management call by the master key. `path` may carry a `/v1` prefix; `query` is the
/// raw query string.
pub async fn handle(
    keys: &Keys,
    method: &http::Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> (u16, Value) {
    handle_as(keys, Actor::Master, method, path, query, body).await
}

/// [`handle`] with the actor the audit log records.
pub async fn handle_as(
    keys: &Keys,
    actor: Actor,
    method: &http::Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> (u16, Value) {
    let cx = Call {
        keys,
        actor,
        query,
        body,
    };
    match route(&cx, method, path).await {
        Ok(v) => (200, v),
        Err(e) => e.into_response(),
    }
}

/// One management call.
struct Call<'a> {
    keys: &'a Keys,
    actor: Actor,
    query: Option<&'a str>,
    body: &'a [u8],
}

impl Call<'_> {
    fn object(&self) -> Result<Map<String, Value>, ApiError> {
        object(self.body)
    }

    fn param(&self, name: &str) -> Option<String> {
        query_param(self.query, name).filter(|v| !v.is_empty())
    }
}

async fn route(cx: &Call<'_>, method: &http::Method, path: &str) -> Result<Value, ApiError> {
    let path = path.strip_prefix("/v1").unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    use http::Method as M;
    let want = |m: M| {
        if *method == m {
            Ok(())
        } else {
            Err(ApiError::Method)
        }
    };
    match path {
        "/key/generate" => want(M::POST).map(|_| keys::generate(cx))?.await,
        "/key/info" => want(M::GET).map(|_| keys::info(cx))?.await,
        "/key/list" => want(M::GET).map(|_| keys::list(cx)),
        "/key/update" => want(M::POST).map(|_| keys::update(cx))?.await,
        "/key/delete" => want(M::POST).map(|_| keys::delete(cx))?.await,
        "/spend/logs" => want(M::GET).map(|_| logs::spend_logs(cx))?.await,
        "/global/spend/report" => want(M::GET).map(|_| logs::spend_report(cx))?.await,
        "/audit/logs" => want(M::GET).map(|_| logs::audit_logs(cx))?.await,
        _ => {
            let (kind, action) = if let Some(a) = path.strip_prefix("/team/") {
                (super::AccountKind::Team, a)
            } else if let Some(a) = path.strip_prefix("/customer/") {
                (super::AccountKind::EndUser, a)
            } else {
                return Err(ApiError::NoRoute);
            };
            let m = match action {
                "info" | "list" => M::GET,
                "new" | "update" | "delete" => M::POST,
                "block" | "unblock" if kind == super::AccountKind::EndUser => M::POST,
                _ => return Err(ApiError::NoRoute),
            };
            want(m)?;
            accounts::route(cx, kind, action).await
        }
    }
}

/// The body as a JSON object (an empty body is `{}`).
fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::BadRequest {
            message: "the request body must be a JSON object".into(),
            param: None,
        }),
        Err(e) => Err(ApiError::BadRequest {
            message: format!("malformed JSON body: {e}"),
            param: None,
        }),
    }
}

fn string_list(v: &Value, name: &str) -> Result<Vec<String>, ApiError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => a
            .iter()
            .map(|m| match m {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                _ => Err(ApiError::bad(
                    format!("{name} must be a list of non-empty strings"),
                    name,
                )),
            })
            .collect(),
        _ => Err(ApiError::bad(
            format!("{name} must be a list of strings"),
            name,
        )),
    }
}

fn duration(v: &Value, name: &str) -> Result<Option<std::time::Duration>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => units::parse_duration(s).map(Some).ok_or_else(|| {
            ApiError::bad(
                format!("{name} must be like \"30s\", \"20m\", \"30h\" or \"30d\", got {s:?}"),
                name,
            )
        }),
        _ => Err(ApiError::bad(
            format!("{name} must be a string like \"30d\" or null"),
            name,
        )),
    }
}

fn limit(v: &Value, name: &str) -> Result<Option<u64>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) if n.as_u64().is_some() => Ok(n.as_u64()),
        _ => Err(ApiError::bad(
            format!("{name} must be a non-negative integer or null"),
            name,
        )),
    }
}

/// A USD amount (a JSON number) as exact micro-dollars: read from the number's decimal text, so
/// `0.1` is exactly 100,000; an amount finer than a micro-dollar is rounded to the nearest one.
fn usd(v: &Value, name: &str) -> Result<Option<Micros>, ApiError> {
    let bad = || {
        ApiError::bad(
            format!("{name} must be a non-negative number (USD) or null"),
            name,
        )
    };
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => {
            let text = n.to_string();
            match crate::pricing::money::parse_decimal(&text) {
                Ok(m) => Ok(Some(Micros(m))),
                Err(crate::pricing::DecimalError::TooPrecise) => match n.as_f64() {
                    Some(f) if f.is_finite() && f >= 0.0 && f * 1e6 < u64::MAX as f64 => {
                        Ok(Some(Micros((f * 1e6).round() as u64)))
                    }
                    _ => Err(bad()),
                },
                Err(_) => Err(bad()),
            }
        }
        _ => Err(bad()),
    }
}

/// Applies a budget or limit field (`max_budget`, `budget_duration`, `rpm`/`rpm_limit`,
/// `tpm`/`tpm_limit`); `false` when `name` is none of them.
fn apply_limit(
    limits: &mut super::Limits,
    name: &str,
    v: &Value,
    now: i64,
) -> Result<bool, ApiError> {
    match name {
        "max_budget" => limits.max_budget = usd(v, name)?,
        "budget_duration" => {
            limits.budget_duration = duration(v, name)?;
            limits.budget_reset_at = limits
                .budget_duration
                .map(|d| now.saturating_add(d.as_secs() as i64));
        }
        "rpm" | "rpm_limit" => limits.rpm = limit(v, name)?,
        "tpm" | "tpm_limit" => limits.tpm = limit(v, name)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// The budget and limit fields of a description.
fn describe_limits(m: &mut Map<String, Value>, l: &super::Limits) {
    m.insert(
        "max_budget".into(),
        json!(l.max_budget.map(Micros::as_usd_f64)),
    );
    m.insert(
        "budget_duration".into(),
        json!(l.budget_duration.map(units::format_duration)),
    );
    m.insert("budget_reset_at".into(), iso(l.budget_reset_at));
    m.insert("rpm".into(), json!(l.rpm));
    m.insert("tpm".into(), json!(l.tpm));
}

fn metadata(v: &Value, name: &str) -> Result<Value, ApiError> {
    match v {
        Value::Null | Value::Object(_) => Ok(v.clone()),
        _ => Err(ApiError::bad("metadata must be an object", name)),
    }
}

fn optional_string(v: &Value, name: &str) -> Result<Option<String>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(ApiError::bad(format!("{name} must be a string"), name)),
    }
}

fn iso(t: Option<i64>) -> Value {
    t.map(|t| Value::String(units::iso8601(t)))
        .unwrap_or(Value::Null)
}

/// `name=value` from a query string, percent-decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (n == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `page` (from 1) and `size` query parameters (`page_size` too), with bounds.
fn pagination(cx: &Call<'_>, default_size: u64) -> (u64, u64) {
    let page = cx
        .param("page")
        .and_then(|p| p.parse::<u64>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let size = cx
        .param("page_size")
        .or_else(|| cx.param("size"))
        .and_then(|p| p.parse::<u64>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(default_size)
        .min(1000);
    (page, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        assert_eq!(
            query_param(Some("a=1&key=sk-a%2Bb+c"), "key").as_deref(),
            Some("sk-a+b c")
        );
        assert_eq!(
            query_param(Some("key=%zz%4"), "key").as_deref(),
            Some("%zz%4")
        );
        assert_eq!(query_param(None, "key"), None);
    }

    #[test]
    fn secrets_are_not_echoed_in_errors() {
        assert_eq!(printable("sk-abcdefghijkl"), "sk-abcd...");
        assert_eq!(printable("kabc"), "kabc");
    }

    #[test]
    fn usd_amounts_are_exact() {
        let v = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert_eq!(usd(&v("0.1"), "b").unwrap(), Some(Micros(100_000)));
        assert_eq!(usd(&v("10"), "b").unwrap(), Some(Micros(10_000_000)));
        assert_eq!(usd(&v("0.0001"), "b").unwrap(), Some(Micros(100)));
        assert_eq!(usd(&v("1e-7"), "b").unwrap(), Some(Micros(0)));
        assert_eq!(usd(&v("null"), "b").unwrap(), None);
        assert!(usd(&v("-1"), "b").is_err());
        assert!(usd(&v("\"ten\""), "b").is_err());
    }

    #[test]
    fn management_paths() {
        for p in [
            "/key/generate",
            "/v1/team/new",
            "/customer/info",
            "/spend/logs",
            "/global/spend/report",
            "/audit/logs",
        ] {
            assert!(is_management_path(p), "{p}");
        }
        for p in ["/v1/chat/completions", "/spend", "/keys", "/v1/models"] {
            assert!(!is_management_path(p), "{p}");
        }
    }
}
