//! `/team/*` and `/customer/*`: teams and end users, in LiteLLM's shapes.
//!
//! | call | body / query | answer |
//! | --- | --- | --- |
//! | `POST /team/new` | `team_id` (optional: generated), `team_alias`, `models`, `max_budget`, `budget_duration`, `rpm`/`rpm_limit`, `tpm`/`tpm_limit`, `metadata`, `blocked` | the team |
//! | `GET /team/info?team_id=T` | | `{"team_id": T, "team_info": {...}, "keys": [...]}` |
//! | `GET /team/list` | | `[team, ...]` |
//! | `POST /team/update` | `{"team_id": T, ...fields}` (`null` clears) | the team |
//! | `POST /team/delete` | `{"team_ids": [T, ...]}` | `{"deleted_teams": [...]}`; the team's keys are refused from then on |
//! | `POST /customer/new` | `user_id` (required), `alias`, `models`, `max_budget`, `budget_duration`, `rpm`/`rpm_limit`, `tpm`/`tpm_limit`, `metadata`, `blocked` | the end user |
//! | `GET /customer/info?end_user_id=U` | | the end user, with `litellm_budget_table` |
//! | `GET /customer/list` | | `[end user, ...]` |
//! | `POST /customer/update` | `{"user_id": U, ...fields}` | the end user |
//! | `POST /customer/delete` | `{"user_ids": [U, ...]}` | `{"deleted_customers": [...]}` |
//! | `POST /customer/block`, `/customer/unblock` | `{"user_ids": [U, ...]}` | `{"blocked_user_ids": [...]}` / `{"unblocked_user_ids": [...]}` |

use super::super::accounts::{Account, AccountKind, MAX_ID_LEN};
use super::super::audit::{diff, AuditEntry};
use super::super::units;
use super::{
    apply_limit, describe_limits, iso, metadata, optional_string, string_list, ApiError, Call,
};
use crate::pricing::Micros;
use serde_json::{json, Map, Value};

/// The alias field's name in each API.
fn alias_field(kind: AccountKind) -> &'static str {
    match kind {
        AccountKind::Team => "team_alias",
        AccountKind::EndUser => "alias",
    }
}

/// The list field of delete, block and unblock.
fn ids_field(kind: AccountKind) -> &'static str {
    match kind {
        AccountKind::Team => "team_ids",
        AccountKind::EndUser => "user_ids",
    }
}

fn not_found(kind: AccountKind, id: &str) -> ApiError {
    let (code, what) = match kind {
        AccountKind::Team => ("team_not_found", "team"),
        AccountKind::EndUser => ("customer_not_found", "end user"),
    };
    ApiError::NotFound {
        code,
        message: format!("{what} not found: {}", super::printable(id)),
        param: kind.id_field(),
    }
}

pub(super) async fn route(
    cx: &Call<'_>,
    kind: AccountKind,
    action: &str,
) -> Result<Value, ApiError> {
    match action {
        "new" => create(cx, kind).await,
        "info" => info(cx, kind).await,
        "list" => Ok(list(cx, kind)),
        "update" => update(cx, kind).await,
        "delete" => delete(cx, kind).await,
        "block" => block(cx, kind, true).await,
        "unblock" => block(cx, kind, false).await,
        _ => Err(ApiError::NoRoute),
    }
}

/// Applies the fields present in `body`; `null` clears.
fn apply(
    kind: AccountKind,
    a: &mut Account,
    body: &Map<String, Value>,
    now: i64,
) -> Result<(), ApiError> {
    let alias = alias_field(kind);
    for (name, v) in body {
        if apply_limit(&mut a.limits, name, v, now)? {
            continue;
        }
        match name.as_str() {
            n if n == kind.id_field() => {}
            n if n == alias => a.alias = optional_string(v, name)?,
            "models" => a.models = string_list(v, name)?,
            "metadata" => a.metadata = metadata(v, name)?,
            "blocked" => {
                a.blocked = match v {
                    Value::Null => false,
                    Value::Bool(b) => *b,
                    _ => return Err(ApiError::bad("blocked must be true or false", name)),
                }
            }
            other => {
                return Err(ApiError::bad(
                    format!(
                        "unsupported field `{other}` (supported: {}, {alias}, models, max_budget, \
                         budget_duration, rpm, rpm_limit, tpm, tpm_limit, metadata, blocked)",
                        kind.id_field()
                    ),
                    other,
                ))
            }
        }
    }
    Ok(())
}

/// The public description of a team or end user.
fn describe(kind: AccountKind, a: &Account, spend: Micros, total: Micros) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(kind.id_field().into(), json!(a.id));
    m.insert(alias_field(kind).into(), json!(a.alias));
    m.insert("models".into(), json!(a.models));
    m.insert("spend".into(), json!(spend.as_usd_f64()));
    m.insert("total_spend".into(), json!(total.as_usd_f64()));
    describe_limits(&mut m, &a.limits);
    m.insert("metadata".into(), a.metadata.clone());
    m.insert("blocked".into(), json!(a.blocked));
    m.insert("created_at".into(), iso(Some(a.created)));
    if kind == AccountKind::EndUser {
        // LiteLLM's customer objects carry their budget in a nested table.
        m.insert(
            "litellm_budget_table".into(),
            json!({
                "max_budget": a.limits.max_budget.map(Micros::as_usd_f64),
                "budget_duration": a.limits.budget_duration.map(units::format_duration),
                "rpm_limit": a.limits.rpm,
                "tpm_limit": a.limits.tpm,
            }),
        );
    }
    m
}

/// A live account by id, from the view or (created elsewhere since the last refresh) the database,
/// with its current spend.
async fn find(
    cx: &Call<'_>,
    kind: AccountKind,
    id: &str,
) -> Result<Option<(Account, Micros, Micros)>, ApiError> {
    if let Some(e) = cx.keys.account(kind, id) {
        if !e.account.deleted {
            return Ok(Some((e.account.clone(), e.spend(), e.total_spend())));
        }
    }
    Ok(cx
        .keys
        .store()
        .get_account(kind, id)
        .await?
        .filter(|a| !a.deleted)
        .map(|a| {
            let (s, t) = (a.spend, a.total_spend);
            (a, s, t)
        }))
}

fn id_param(kind: AccountKind, body: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    let field = kind.id_field();
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_ID_LEN => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad(
            format!("{field} must be a non-empty string of at most {MAX_ID_LEN} bytes"),
            field,
        )),
    }
}

async fn create(cx: &Call<'_>, kind: AccountKind) -> Result<Value, ApiError> {
    let body = cx.object()?;
    let id = match (id_param(kind, &body)?, kind) {
        (Some(id), _) => id,
        (None, AccountKind::Team) => format!("team-{:024x}", rand::random::<u128>() >> 32),
        (None, AccountKind::EndUser) => {
            return Err(ApiError::bad("missing field `user_id`", "user_id"))
        }
    };
    let now = units::now();
    let mut a = Account::new(id.clone(), now);
    apply(kind, &mut a, &body, now)?;
    if !cx.keys.create_account(kind, a.clone()).await? {
        return Err(ApiError::Exists(format!(
            "{} `{}` already exists",
            kind.label(),
            super::printable(&id)
        )));
    }
    let out = describe(kind, &a, Micros::ZERO, Micros::ZERO);
    let mut entry = AuditEntry::new(cx.actor, "created", kind.audit_table(), Some(&id));
    entry.updated_values = Value::Object(out.clone());
    cx.keys.audit(entry).await;
    Ok(Value::Object(out))
}

async fn info(cx: &Call<'_>, kind: AccountKind) -> Result<Value, ApiError> {
    let param = match kind {
        AccountKind::Team => "team_id",
        AccountKind::EndUser => "end_user_id",
    };
    let id = cx
        .param(param)
        .or_else(|| cx.param(kind.id_field()))
        .ok_or_else(|| ApiError::bad(format!("missing query parameter `{param}`"), param))?;
    let (a, spend, total) = find(cx, kind, &id)
        .await?
        .ok_or_else(|| not_found(kind, &id))?;
    let d = describe(kind, &a, spend, total);
    match kind {
        AccountKind::EndUser => Ok(Value::Object(d)),
        AccountKind::Team => {
            let keys: Vec<Value> = cx
                .keys
                .entries()
                .into_iter()
                .filter(|e| !e.key.deleted && e.key.team_id.as_deref() == Some(id.as_str()))
                .map(|e| Value::Object(super::keys::describe(&e.key, e.spend())))
                .collect();
            Ok(json!({"team_id": id, "team_info": d, "keys": keys}))
        }
    }
}

fn list(cx: &Call<'_>, kind: AccountKind) -> Value {
    let mut live: Vec<_> = cx
        .keys
        .accounts(kind)
        .into_iter()
        .filter(|e| !e.account.deleted)
        .collect();
    live.sort_by(|a, b| {
        (a.account.created, &a.account.id).cmp(&(b.account.created, &b.account.id))
    });
    Value::Array(
        live.iter()
            .map(|e| Value::Object(describe(kind, &e.account, e.spend(), e.total_spend())))
            .collect(),
    )
}

async fn update(cx: &Call<'_>, kind: AccountKind) -> Result<Value, ApiError> {
    let body = cx.object()?;
    let field = kind.id_field();
    let id = id_param(kind, &body)?
        .ok_or_else(|| ApiError::bad(format!("missing field `{field}`"), field))?;
    let (mut a, spend, total) = find(cx, kind, &id)
        .await?
        .ok_or_else(|| not_found(kind, &id))?;
    let before = describe(kind, &a, spend, total);
    apply(kind, &mut a, &body, units::now())?;
    save(cx, kind, a, before).await
}

/// Writes changed settings and records the change.
async fn save(
    cx: &Call<'_>,
    kind: AccountKind,
    a: Account,
    before: Map<String, Value>,
) -> Result<Value, ApiError> {
    let id = a.id.clone();
    if !cx.keys.update_account(kind, a).await? {
        return Err(not_found(kind, &id));
    }
    let (a, spend, total) = find(cx, kind, &id)
        .await?
        .ok_or_else(|| not_found(kind, &id))?;
    let out = describe(kind, &a, spend, total);
    let mut entry = AuditEntry::new(cx.actor, "updated", kind.audit_table(), Some(&id));
    (entry.before_value, entry.updated_values) = diff(&before, &out);
    cx.keys.audit(entry).await;
    Ok(Value::Object(out))
}

/// The ids a delete, block or unblock names: every one must exist (all or nothing).
async fn named(
    cx: &Call<'_>,
    kind: AccountKind,
) -> Result<Vec<(Account, Micros, Micros)>, ApiError> {
    let body = cx.object()?;
    let field = ids_field(kind);
    for name in body.keys() {
        if name != field {
            return Err(ApiError::bad(
                format!("unsupported field `{name}` (expected `{field}`)"),
                name,
            ));
        }
    }
    let ids = match body.get(field) {
        Some(v @ Value::Array(_)) => string_list(v, field)?,
        Some(_) => return Err(ApiError::bad(format!("{field} must be a list"), field)),
        None => return Err(ApiError::bad(format!("missing field `{field}`"), field)),
    };
    if ids.is_empty() {
        return Err(ApiError::bad(format!("{field} must not be empty"), field));
    }
    let mut found = Vec::with_capacity(ids.len());
    for id in &ids {
        found.push(
            find(cx, kind, id)
                .await?
                .ok_or_else(|| not_found(kind, id))?,
        );
    }
    Ok(found)
}

async fn delete(cx: &Call<'_>, kind: AccountKind) -> Result<Value, ApiError> {
    let found = named(cx, kind).await?;
    let mut deleted = Vec::with_capacity(found.len());
    for (a, spend, total) in &found {
        if cx.keys.delete_account(kind, &a.id).await? {
            let mut entry = AuditEntry::new(cx.actor, "deleted", kind.audit_table(), Some(&a.id));
            entry.before_value = Value::Object(describe(kind, a, *spend, *total));
            cx.keys.audit(entry).await;
        }
        deleted.push(json!(a.id));
    }
    let field = match kind {
        AccountKind::Team => "deleted_teams",
        AccountKind::EndUser => "deleted_customers",
    };
    Ok(json!({ field: deleted }))
}

async fn block(cx: &Call<'_>, kind: AccountKind, blocked: bool) -> Result<Value, ApiError> {
    let found = named(cx, kind).await?;
    let mut ids = Vec::with_capacity(found.len());
    for (mut a, spend, total) in found {
        let before = describe(kind, &a, spend, total);
        a.blocked = blocked;
        ids.push(json!(a.id));
        save(cx, kind, a, before).await?;
    }
    let field = if blocked {
        "blocked_user_ids"
    } else {
        "unblocked_user_ids"
    };
    Ok(json!({ field: ids }))
}
