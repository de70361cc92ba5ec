//! The `/key/*` management endpoints in LiteLLM's shapes (master key only: the caller checks it).
//!
//! | call | body / query | answer |
//! | --- | --- | --- |
//! | `POST /key/generate` | `models`, `routes` (also `allowed_routes`), `aliases`, `duration`, `max_budget`, `budget_duration`, `rpm`/`rpm_limit`, `tpm`/`tpm_limit`, `metadata`, `key_alias` | `{"key": "sk-...", "expires": ISO 8601 or null, "key_id", ...}` — the only time the secret is shown |
//! | `GET /key/info?key=K` | | `{"key": K, "info": {"spend", "expires", "models", "routes", "aliases", "max_budget", "budget_duration", "rpm", "tpm", "metadata", "key_id", ...}}` |
//! | `GET /key/list[?page=&size=&return_full_object=true]` | | `{"keys": [key_id, ...], "total_count", "current_page", "total_pages"}`; never a secret or hash |
//! | `POST /key/update` | `{"key": K, ...fields}` (`null` clears a field) | `{"key": K, ...info}` |
//! | `POST /key/delete` | `{"keys": [K, ...]}` | `{"deleted_keys": [K, ...]}` |
//!
//! `K` is the secret, or (so that LiteLLM scripts can feed `/key/list` output back) the `key_id` or
//! the hash. Bad input answers 400 `invalid_request`; a key that does not exist (or was deleted) 404
//! `key_not_found`; a database failure 503 `state_unavailable`.

use super::{material, units, KeyEntry, Keys, StoreError, VirtualKey};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Why a management call failed.
#[derive(Debug)]
enum ApiError {
    BadRequest {
        message: String,
        param: Option<String>,
    },
    KeyNotFound(String),
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

    fn into_response(self) -> (u16, Value) {
        let (status, kind, code, message, param) = match self {
            ApiError::BadRequest { message, param } => (
                400,
                "invalid_request_error",
                "invalid_request",
                message,
                param,
            ),
            ApiError::KeyNotFound(k) => (
                404,
                "invalid_request_error",
                "key_not_found",
                format!("key not found: {}", printable(&k)),
                Some("key".to_string()),
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
                "unknown /key endpoint (generate, info, list, update, delete)".to_string(),
                None,
            ),
            ApiError::Method => (
                405,
                "invalid_request_error",
                "method_not_allowed",
                "method not allowed for this /key endpoint".to_string(),
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

/// Serves one management call. `path` may carry a `/v1` prefix; `query` is the raw query string.
pub async fn handle(
    keys: &Keys,
    method: &http::Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> (u16, Value) {
    match route(keys, method, path, query, body).await {
        Ok(v) => (200, v),
        Err(e) => e.into_response(),
    }
}

async fn route(
    keys: &Keys,
    method: &http::Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Result<Value, ApiError> {
    let path = path.strip_prefix("/v1").unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    let (want, f): (http::Method, _) = match path {
        "/key/generate" => (http::Method::POST, Endpoint::Generate),
        "/key/info" => (http::Method::GET, Endpoint::Info),
        "/key/list" => (http::Method::GET, Endpoint::List),
        "/key/update" => (http::Method::POST, Endpoint::Update),
        "/key/delete" => (http::Method::POST, Endpoint::Delete),
        _ => return Err(ApiError::NoRoute),
    };
    if *method != want {
        return Err(ApiError::Method);
    }
    match f {
        Endpoint::Generate => generate(keys, &object(body)?).await,
        Endpoint::Info => info(keys, query).await,
        Endpoint::List => Ok(list(keys, query)),
        Endpoint::Update => update(keys, &object(body)?).await,
        Endpoint::Delete => delete(keys, &object(body)?).await,
    }
}

enum Endpoint {
    Generate,
    Info,
    List,
    Update,
    Delete,
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

/// Fields generate and update accept (besides `key` for update).
const FIELDS: &[&str] = &[
    "models",
    "routes",
    "allowed_routes",
    "aliases",
    "duration",
    "max_budget",
    "budget_duration",
    "rpm",
    "rpm_limit",
    "tpm",
    "tpm_limit",
    "metadata",
    "key_alias",
];

/// Applies the fields present in `body` to `key`; `null` clears. `now` anchors `duration` and
/// `budget_duration`.
fn apply(key: &mut VirtualKey, body: &Map<String, Value>, now: i64) -> Result<(), ApiError> {
    for (name, v) in body {
        match name.as_str() {
            "key" | "keys" => {}
            "models" => {
                key.models = string_list(v, name)?;
            }
            // `allowed_routes` is LiteLLM's name for the same grant.
            "routes" | "allowed_routes" => {
                key.routes = string_list(v, name)?
                    .into_iter()
                    .map(|p| {
                        let t = p.trim_end_matches('/');
                        if t.starts_with('/') {
                            Ok(t.to_string())
                        } else {
                            Err(ApiError::bad(
                                format!("`{p}` is not a route prefix like `/openai`"),
                                "routes",
                            ))
                        }
                    })
                    .collect::<Result<_, _>>()?;
            }
            "aliases" => {
                key.aliases = match v {
                    Value::Null => Default::default(),
                    Value::Object(m) => m
                        .iter()
                        .map(|(from, to)| match to {
                            Value::String(s) if !s.is_empty() => Ok((from.clone(), s.clone())),
                            _ => Err(ApiError::bad(
                                format!("aliases.{from} must be a non-empty string (a model name)"),
                                "aliases",
                            )),
                        })
                        .collect::<Result<_, _>>()?,
                    _ => {
                        return Err(ApiError::bad(
                            "aliases must be an object of requested name -> model name",
                            name,
                        ))
                    }
                };
            }
            "duration" => {
                key.expires = duration(v, name)?.map(|d| now.saturating_add(d.as_secs() as i64));
            }
            "max_budget" => {
                key.max_budget = match v {
                    Value::Null => None,
                    Value::Number(n) => match n.as_f64() {
                        Some(f) if f.is_finite() && f >= 0.0 => Some(f),
                        _ => {
                            return Err(ApiError::bad(
                                "max_budget must be a non-negative number (USD)",
                                name,
                            ))
                        }
                    },
                    _ => {
                        return Err(ApiError::bad(
                            "max_budget must be a non-negative number (USD) or null",
                            name,
                        ))
                    }
                };
            }
            "budget_duration" => {
                key.budget_duration = duration(v, name)?;
                key.budget_reset_at = key
                    .budget_duration
                    .map(|d| now.saturating_add(d.as_secs() as i64));
            }
            "rpm" | "rpm_limit" => key.rpm = limit(v, name)?,
            "tpm" | "tpm_limit" => key.tpm = limit(v, name)?,
            "metadata" => {
                key.metadata = match v {
                    Value::Null | Value::Object(_) => v.clone(),
                    _ => return Err(ApiError::bad("metadata must be an object", name)),
                };
            }
            "key_alias" => {
                key.alias = match v {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    _ => return Err(ApiError::bad("key_alias must be a string", name)),
                };
            }
            other => {
                return Err(ApiError::bad(
                    format!(
                        "unsupported field `{other}` (supported: {})",
                        FIELDS.join(", ")
                    ),
                    other,
                ))
            }
        }
    }
    Ok(())
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

fn iso(t: Option<i64>) -> Value {
    t.map(|t| Value::String(units::iso8601(t)))
        .unwrap_or(Value::Null)
}

/// The public description of a key: no secret, no hash.
fn describe(key: &VirtualKey, spend: f64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("key_id".into(), json!(key.key_id));
    m.insert("key_alias".into(), json!(key.alias));
    m.insert("spend".into(), json!(spend));
    m.insert("expires".into(), iso(key.expires));
    m.insert("models".into(), json!(key.models));
    m.insert("routes".into(), json!(key.routes));
    m.insert("aliases".into(), json!(key.aliases));
    m.insert("max_budget".into(), json!(key.max_budget));
    m.insert(
        "budget_duration".into(),
        json!(key.budget_duration.map(units::format_duration)),
    );
    m.insert("budget_reset_at".into(), iso(key.budget_reset_at));
    m.insert("rpm".into(), json!(key.rpm));
    m.insert("tpm".into(), json!(key.tpm));
    m.insert("metadata".into(), key.metadata.clone());
    m.insert("created_at".into(), iso(Some(key.created)));
    m
}

async fn generate(keys: &Keys, body: &Map<String, Value>) -> Result<Value, ApiError> {
    if body.contains_key("key") {
        return Err(ApiError::bad(
            "keys are generated by the gateway; `key` cannot be chosen",
            "key",
        ));
    }
    let now = units::now();
    let mut key = VirtualKey::new(String::new());
    key.created = now;
    apply(&mut key, body, now)?;
    let (secret, key) = keys.generate(key).await?;
    let mut out = describe(&key, 0.0);
    out.insert("key".into(), Value::String(secret));
    Ok(Value::Object(out))
}

/// The key a caller names: its secret, hash, or key_id. Looks in the view first, then (for a key
/// created on another instance since the last refresh) in the database.
async fn find(keys: &Keys, k: &str) -> Result<Option<(VirtualKey, f64)>, ApiError> {
    let hash = if k.starts_with(material::PREFIX) {
        Some(material::to_hex(&material::digest(k)))
    } else if material::from_hex(k).is_some() {
        Some(k.to_ascii_lowercase())
    } else {
        None
    };
    let found = match &hash {
        Some(h) => keys.entry_by_hash(h),
        None => {
            let mut matching = keys
                .entries()
                .into_iter()
                .filter(|e| e.key.key_id == k && !e.key.deleted);
            match (matching.next(), matching.next()) {
                (Some(e), None) => Some(e),
                _ => None,
            }
        }
    };
    let found = match (found, &hash) {
        (Some(e), _) => Some(live(&e)),
        (None, Some(h)) => keys.store().get(h).await?.map(|k| {
            let s = k.spend;
            (k, s)
        }),
        (None, None) => None,
    };
    Ok(found.filter(|(k, _)| !k.deleted))
}

fn live(e: &Arc<KeyEntry>) -> (VirtualKey, f64) {
    (e.key.clone(), e.spend())
}

fn key_param(body: &Map<String, Value>) -> Result<String, ApiError> {
    match body.get("key") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(ApiError::bad("key must be a string", "key")),
        None => Err(ApiError::bad("missing field `key`", "key")),
    }
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

async fn info(keys: &Keys, query: Option<&str>) -> Result<Value, ApiError> {
    let k = query_param(query, "key")
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::bad("missing query parameter `key`", "key"))?;
    let (key, spend) = find(keys, &k)
        .await?
        .ok_or_else(|| ApiError::KeyNotFound(k.clone()))?;
    let mut info = describe(&key, spend);
    let by_model = keys.store().model_spend(&key.hash).await?;
    info.insert("model_spend".into(), json!(by_model));
    Ok(json!({"key": k, "info": info}))
}

fn list(keys: &Keys, query: Option<&str>) -> Value {
    let page = query_param(query, "page")
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let size = query_param(query, "size")
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(100)
        .min(1000);
    let full = query_param(query, "return_full_object").is_some_and(|v| v == "true");
    let mut live: Vec<Arc<KeyEntry>> = keys
        .entries()
        .into_iter()
        .filter(|e| !e.key.deleted)
        .collect();
    live.sort_by(|a, b| (a.key.created, &a.key.key_id).cmp(&(b.key.created, &b.key.key_id)));
    let total = live.len();
    let items: Vec<Value> = live
        .iter()
        .skip((page - 1).saturating_mul(size))
        .take(size)
        .map(|e| {
            if full {
                Value::Object(describe(&e.key, e.spend()))
            } else {
                json!(e.key.key_id)
            }
        })
        .collect();
    json!({
        "keys": items,
        "total_count": total,
        "current_page": page,
        "total_pages": total.div_ceil(size),
    })
}

async fn update(keys: &Keys, body: &Map<String, Value>) -> Result<Value, ApiError> {
    let k = key_param(body)?;
    let (mut key, _) = find(keys, &k)
        .await?
        .ok_or_else(|| ApiError::KeyNotFound(k.clone()))?;
    apply(&mut key, body, units::now())?;
    let hash = key.hash.clone();
    if !keys.update(key).await? {
        return Err(ApiError::KeyNotFound(k));
    }
    let (key, spend) = find(keys, &hash)
        .await?
        .ok_or_else(|| ApiError::KeyNotFound(k.clone()))?;
    let mut out = describe(&key, spend);
    out.insert("key".into(), Value::String(k));
    Ok(Value::Object(out))
}

async fn delete(keys: &Keys, body: &Map<String, Value>) -> Result<Value, ApiError> {
    for name in body.keys() {
        if name != "keys" {
            return Err(ApiError::bad(
                format!("unsupported field `{name}` (expected `keys`)"),
                name,
            ));
        }
    }
    let names = match body.get("keys") {
        Some(v @ Value::Array(_)) => string_list(v, "keys")?,
        Some(_) => return Err(ApiError::bad("keys must be a list of keys", "keys")),
        None => return Err(ApiError::bad("missing field `keys`", "keys")),
    };
    if names.is_empty() {
        return Err(ApiError::bad("keys must not be empty", "keys"));
    }
    // All or nothing: every named key must exist before any is deleted.
    let mut hashes = Vec::with_capacity(names.len());
    for k in &names {
        let (key, _) = find(keys, k)
            .await?
            .ok_or_else(|| ApiError::KeyNotFound(k.clone()))?;
        hashes.push(key.hash);
    }
    for h in &hashes {
        keys.delete(h).await?;
    }
    Ok(json!({"deleted_keys": names}))
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
}
