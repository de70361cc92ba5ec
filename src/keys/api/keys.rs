//! `/key/*`.
//!
//! | call | body / query | answer |
//! | --- | --- | --- |
//! | `POST /key/generate` | `models`, `routes` (also `allowed_routes`), `aliases`, `duration`, `max_budget`, `budget_duration`, `rpm`/`rpm_limit`, `tpm`/`tpm_limit`, `metadata`, `key_alias`, `team_id` | `{"key": "sk-...", "expires": ISO 8601 or null, "key_id", ...}` — the only time the secret is shown |
//! | `GET /key/info?key=K` | | `{"key": K, "info": {"spend", "expires", "models", "routes", "aliases", "max_budget", "budget_duration", "rpm", "tpm", "metadata", "key_id", "team_id", "model_spend", ...}}` |
//! | `GET /key/list[?page=&size=&return_full_object=true&team_id=]` | | `{"keys": [key_id, ...], "total_count", "current_page", "total_pages"}`; never a secret or hash |
//! | `POST /key/update` | `{"key": K, ...fields}` (`null` clears a field) | `{"key": K, ...info}` |
//! | `POST /key/delete` | `{"keys": [K, ...]}` | `{"deleted_keys": [K, ...]}` |
//!
//! `K` is the secret, or (so that LiteLLM scripts can feed `/key/list` output back) the `key_id` or
//! the hash. A `team_id` must name an existing team.

use super::super::audit::{diff, AuditEntry};
use super::super::{material, units, AccountKind, KeyEntry, Keys, VirtualKey};
use super::{
    apply_limit, describe_limits, duration, iso, metadata, optional_string, string_list, ApiError,
    Call,
};
use crate::pricing::Micros;
use serde_json::{json, Map, Value};
use std::sync::Arc;

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
    "team_id",
];

/// Applies the fields present in `body` to `key`; `null` clears. `now` anchors `duration` and
/// `budget_duration`.
async fn apply(
    keys: &Keys,
    key: &mut VirtualKey,
    body: &Map<String, Value>,
    now: i64,
) -> Result<(), ApiError> {
    for (name, v) in body {
        if apply_limit(&mut key.limits, name, v, now)? {
            continue;
        }
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
            "metadata" => key.metadata = metadata(v, name)?,
            "key_alias" => key.alias = optional_string(v, name)?,
            "team_id" => {
                key.team_id = optional_string(v, name)?.filter(|t| !t.is_empty());
                if let Some(t) = &key.team_id {
                    if !team_exists(keys, t).await? {
                        return Err(ApiError::NotFound {
                            code: "team_not_found",
                            message: format!("team not found: {}", super::printable(t)),
                            param: "team_id",
                        });
                    }
                }
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

/// Whether a live team has this id (in the view, or in the database for one created elsewhere).
async fn team_exists(keys: &Keys, id: &str) -> Result<bool, ApiError> {
    if let Some(t) = keys.account(AccountKind::Team, id) {
        return Ok(!t.account.deleted);
    }
    Ok(keys
        .store()
        .get_account(AccountKind::Team, id)
        .await?
        .is_some_and(|t| !t.deleted))
}

/// The public description of a key: no secret, no hash.
pub(super) fn describe(key: &VirtualKey, spend: Micros) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("key_id".into(), json!(key.key_id));
    m.insert("key_alias".into(), json!(key.alias));
    m.insert("team_id".into(), json!(key.team_id));
    m.insert("spend".into(), json!(spend.as_usd_f64()));
    m.insert("expires".into(), iso(key.expires));
    m.insert("models".into(), json!(key.models));
    m.insert("routes".into(), json!(key.routes));
    m.insert("aliases".into(), json!(key.aliases));
    describe_limits(&mut m, &key.limits);
    m.insert("metadata".into(), key.metadata.clone());
    m.insert("created_at".into(), iso(Some(key.created)));
    m
}

pub(super) async fn generate(cx: &Call<'_>) -> Result<Value, ApiError> {
    let body = cx.object()?;
    if body.contains_key("key") {
        return Err(ApiError::bad(
            "keys are generated by the gateway; `key` cannot be chosen",
            "key",
        ));
    }
    let now = units::now();
    let mut key = VirtualKey::new(String::new());
    key.created = now;
    apply(cx.keys, &mut key, &body, now).await?;
    let (secret, key) = cx.keys.generate(key).await?;
    let out = describe(&key, Micros::ZERO);
    let mut entry = AuditEntry::new(cx.actor, "created", "keys", Some(&key.key_id));
    entry.updated_values = Value::Object(out.clone());
    cx.keys.audit(entry).await;
    let mut out = out;
    out.insert("key".into(), Value::String(secret));
    Ok(Value::Object(out))
}

/// The key a caller names: its secret, hash, or key_id. Looks in the view first, then (for a key
/// created on another instance since the last refresh) in the database.
pub(super) async fn find(keys: &Keys, k: &str) -> Result<Option<(VirtualKey, Micros)>, ApiError> {
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

fn live(e: &Arc<KeyEntry>) -> (VirtualKey, Micros) {
    (e.key.clone(), e.spend())
}

fn key_param(body: &Map<String, Value>) -> Result<String, ApiError> {
    match body.get("key") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(ApiError::bad("key must be a string", "key")),
        None => Err(ApiError::bad("missing field `key`", "key")),
    }
}

pub(super) async fn info(cx: &Call<'_>) -> Result<Value, ApiError> {
    let k = cx
        .param("key")
        .ok_or_else(|| ApiError::bad("missing query parameter `key`", "key"))?;
    let (key, spend) = find(cx.keys, &k)
        .await?
        .ok_or_else(|| ApiError::key_not_found(&k))?;
    let mut info = describe(&key, spend);
    let by_model: Map<String, Value> = cx
        .keys
        .store()
        .model_spend(&key.hash)
        .await?
        .into_iter()
        .map(|(m, v)| (m, json!(v.as_usd_f64())))
        .collect();
    info.insert("model_spend".into(), Value::Object(by_model));
    Ok(json!({"key": k, "info": info}))
}

pub(super) fn list(cx: &Call<'_>) -> Value {
    let (page, size) = super::pagination(cx, 100);
    let full = cx.param("return_full_object").is_some_and(|v| v == "true");
    let team = cx.param("team_id");
    let mut live: Vec<Arc<KeyEntry>> = cx
        .keys
        .entries()
        .into_iter()
        .filter(|e| !e.key.deleted)
        .filter(|e| team.is_none() || e.key.team_id == team)
        .collect();
    live.sort_by(|a, b| (a.key.created, &a.key.key_id).cmp(&(b.key.created, &b.key.key_id)));
    let total = live.len() as u64;
    let items: Vec<Value> = live
        .iter()
        .skip(((page - 1).saturating_mul(size)) as usize)
        .take(size as usize)
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

pub(super) async fn update(cx: &Call<'_>) -> Result<Value, ApiError> {
    let body = cx.object()?;
    let k = key_param(&body)?;
    let (mut key, spend) = find(cx.keys, &k)
        .await?
        .ok_or_else(|| ApiError::key_not_found(&k))?;
    let before = describe(&key, spend);
    apply(cx.keys, &mut key, &body, units::now()).await?;
    let hash = key.hash.clone();
    if !cx.keys.update(key).await? {
        return Err(ApiError::key_not_found(&k));
    }
    let (key, spend) = find(cx.keys, &hash)
        .await?
        .ok_or_else(|| ApiError::key_not_found(&k))?;
    let out = describe(&key, spend);
    let mut entry = AuditEntry::new(cx.actor, "updated", "keys", Some(&key.key_id));
    (entry.before_value, entry.updated_values) = diff(&before, &out);
    cx.keys.audit(entry).await;
    let mut out = out;
    out.insert("key".into(), Value::String(k));
    Ok(Value::Object(out))
}

pub(super) async fn delete(cx: &Call<'_>) -> Result<Value, ApiError> {
    let body = cx.object()?;
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
    let mut found = Vec::with_capacity(names.len());
    for k in &names {
        let (key, spend) = find(cx.keys, k)
            .await?
            .ok_or_else(|| ApiError::key_not_found(k))?;
        found.push((key, spend));
    }
    for (key, spend) in &found {
        if cx.keys.delete(&key.hash).await? {
            let mut entry = AuditEntry::new(cx.actor, "deleted", "keys", Some(&key.key_id));
            entry.before_value = Value::Object(describe(key, *spend));
            cx.keys.audit(entry).await;
        }
    }
    Ok(json!({"deleted_keys": names}))
}
