//! `GET /spend/logs`, `GET /global/spend/report`, `GET /audit/logs`.
//!
//! | call | query | answer |
//! | --- | --- | --- |
//! | `GET /spend/logs` | `key` (also `api_key`: a secret, hash or key_id), `team_id`, `user` (also `user_id`, `end_user`), `model`, `request_id`, `start_date`, `end_date`, `page`, `page_size` | `{"data": [row, ...], "total", "page", "page_size", "total_pages"}`, newest first |
//! | `GET /global/spend/report` | `start_date`, `end_date`, `group_by` (`team` default, `key`, `model`, `user`) | `[{"group_by_day": "YYYY-MM-DD", "<group>s": [{"<group>": ..., "total_spend", "spend_micros", "requests", "prompt_tokens", "completion_tokens"}, ...]}, ...]` |
//! | `GET /audit/logs` | `table_name` (`keys`, `teams`, `customers`, `config`), `object_id`, `action`, `changed_by`, `start_date`, `end_date`, `page`, `page_size` | `{"data": [entry, ...], "total", "page", "page_size", "total_pages"}`, newest first |
//!
//! Dates are `YYYY-MM-DD` (UTC; an `end_date` day is included whole), an ISO 8601 UTC time, or unix
//! seconds.

use super::super::store::{AuditQuery, ReportGroup, ReportQuery, SpendLogQuery};
use super::super::{material, units};
use super::{ApiError, Call};
use serde_json::{json, Map, Value};

/// `[start, end)` in unix ms from `start_date` / `end_date`.
fn range(cx: &Call<'_>) -> Result<(Option<i64>, Option<i64>), ApiError> {
    let read = |name: &str| -> Result<Option<(i64, bool)>, ApiError> {
        match cx.param(name) {
            None => Ok(None),
            Some(s) => units::parse_time(&s)
                .map(|t| Some((t, s.trim().len() == 10)))
                .ok_or_else(|| {
                    ApiError::bad(
                        format!("{name} must be YYYY-MM-DD, an ISO 8601 UTC time or unix seconds"),
                        name,
                    )
                }),
        }
    };
    let start = read("start_date")?.map(|(t, _)| t.saturating_mul(1000));
    // A date alone means the whole day.
    let end = read("end_date")?.map(|(t, day)| {
        let t = if day { t.saturating_add(86400) } else { t };
        t.saturating_mul(1000)
    });
    Ok((start, end))
}

/// The key_id a `key` parameter names (a secret and a hash are turned into their key_id, never
/// stored or echoed).
fn key_id_of(k: &str) -> String {
    if k.starts_with(material::PREFIX) {
        material::key_id(&material::to_hex(&material::digest(k)))
    } else if material::from_hex(k).is_some() {
        material::key_id(&k.to_ascii_lowercase())
    } else {
        k.to_string()
    }
}

fn page(data: Vec<Value>, total: u64, page: u64, size: u64) -> Value {
    json!({
        "data": data,
        "total": total,
        "page": page,
        "page_size": size,
        "total_pages": total.div_ceil(size),
    })
}

pub(super) async fn spend_logs(cx: &Call<'_>) -> Result<Value, ApiError> {
    let (start_ms, end_ms) = range(cx)?;
    let (p, size) = super::pagination(cx, 100);
    let q = SpendLogQuery {
        key_id: cx
            .param("key")
            .or_else(|| cx.param("api_key"))
            .map(|k| key_id_of(&k)),
        team_id: cx.param("team_id"),
        end_user: cx
            .param("user")
            .or_else(|| cx.param("user_id"))
            .or_else(|| cx.param("end_user")),
        model: cx.param("model"),
        request_id: cx.param("request_id"),
        start_ms,
        end_ms,
        offset: (p - 1).saturating_mul(size),
        limit: size,
    };
    let (rows, total) = cx.keys.store().spend_logs(&q).await?;
    Ok(page(
        rows.iter().map(|r| r.to_json()).collect(),
        total,
        p,
        size,
    ))
}

pub(super) async fn spend_report(cx: &Call<'_>) -> Result<Value, ApiError> {
    let (start_ms, end_ms) = range(cx)?;
    let group = match cx.param("group_by") {
        None => ReportGroup::Team,
        Some(g) => ReportGroup::parse(&g).ok_or_else(|| {
            ApiError::bad("group_by must be one of team, key, model, user", "group_by")
        })?,
    };
    let rows = cx
        .keys
        .store()
        .spend_report(&ReportQuery {
            group,
            start_ms,
            end_ms,
        })
        .await?;
    let list = format!("{}s", group.name());
    let mut days: Vec<Value> = Vec::new();
    let mut current: Option<(i64, Vec<Value>)> = None;
    for r in rows {
        let mut item = Map::new();
        item.insert(group.name().into(), json!(r.group));
        item.insert("total_spend".into(), json!(r.spend.as_usd_f64()));
        item.insert("spend_micros".into(), json!(r.spend.0));
        item.insert("requests".into(), json!(r.requests));
        item.insert("prompt_tokens".into(), json!(r.prompt_tokens));
        item.insert("completion_tokens".into(), json!(r.completion_tokens));
        match &mut current {
            Some((day, items)) if *day == r.day => items.push(Value::Object(item)),
            _ => {
                if let Some((day, items)) = current.take() {
                    days.push(
                        json!({"group_by_day": units::date_of_day(day), list.as_str(): items}),
                    );
                }
                current = Some((r.day, vec![Value::Object(item)]));
            }
        }
    }
    if let Some((day, items)) = current {
        days.push(json!({"group_by_day": units::date_of_day(day), list.as_str(): items}));
    }
    Ok(Value::Array(days))
}

pub(super) async fn audit_logs(cx: &Call<'_>) -> Result<Value, ApiError> {
    let (start_ms, end_ms) = range(cx)?;
    let (p, size) = super::pagination(cx, 100);
    let q = AuditQuery {
        table_name: cx.param("table_name").or_else(|| cx.param("object_type")),
        object_id: cx.param("object_id"),
        action: cx.param("action"),
        changed_by: cx.param("changed_by"),
        start_ms,
        end_ms,
        offset: (p - 1).saturating_mul(size),
        limit: size,
    };
    let (rows, total) = cx.keys.store().audit_logs(&q).await?;
    Ok(page(
        rows.iter().map(|e| e.to_json()).collect(),
        total,
        p,
        size,
    ))
}
