//! The console's JSON: what each page shows, built from the running state. Nothing here holds a
//! secret: upstream URLs are shown with any password masked, and management answers lose every
//! key hash.

use super::query_param;
use crate::config::Config;
use crate::metrics::recent::RecentFilter;
use crate::state::{Shared, State};
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering;

/// Which credentials open the console (names only).
pub fn credential_names(cfg: &Config) -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg
        .server
        .master_key
        .as_ref()
        .is_some_and(|k| !k.is_empty())
    {
        v.push("master_key");
    }
    if cfg.admin.token.as_ref().is_some_and(|k| !k.is_empty()) {
        v.push("admin_token");
    }
    v
}

/// Overview: the last hour (all traffic or `model`), a summary of the last `window` seconds
/// (default 300), the cache, batches in flight, queue depths and upstream health counts.
pub fn overview(shared: &Shared, query: Option<&str>) -> Value {
    let model = query_param(query, "model");
    let window = query_param(query, "window")
        .and_then(|w| w.parse::<u64>().ok())
        .unwrap_or(300)
        .clamp(10, 3600);
    let now = crate::metrics::timeline::now_ms();
    let state = shared.state.load();
    let timeline = shared.timeline.json(model.as_deref(), window, now);
    let mut queues = Map::new();
    if let Some(models) = state.sched.stats().get("models").and_then(Value::as_object) {
        for (name, m) in models {
            queues.insert(name.clone(), m["queue_depth"].clone());
        }
    }
    let (mut healthy, mut total) = (0, 0);
    for u in &state.upstreams {
        total += 1;
        if u.healthy() {
            healthy += 1;
        }
    }
    json!({
        "timeline": timeline,
        "cache": state.cache.stats(),
        "cache_enabled": state.config.models.iter().any(|m| m.cache.enabled),
        "batches": shared.batcher.stats_json(),
        "queues": queues,
        "upstreams": {"healthy": healthy, "total": total},
        "configured_models": state.config.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
    })
}

fn ms(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}

/// Models and upstreams: every deployment's live state and every upstream's checks.
pub fn models(state: &State) -> Value {
    let sched = state.sched.stats();
    let models: Vec<Value> = state
        .config
        .models
        .iter()
        .zip(&state.balancers)
        .map(|(m, b)| {
            let s = &sched["models"][m.name.as_str()];
            let deployments: Vec<Value> = m
                .deployments
                .iter()
                .zip(&b.deployments)
                .enumerate()
                .map(|(i, (d, live))| {
                    let pool = state.upstreams.get(d.upstream_id.index());
                    let cooldown = live.cooldown_left();
                    let up_healthy = pool.is_some_and(|p| p.healthy());
                    json!({
                        "upstream": d.upstream,
                        "model": d.model,
                        "weight": d.weight,
                        "rpm": d.rpm,
                        "tpm": d.tpm,
                        "healthy": up_healthy && cooldown.is_none(),
                        "upstream_healthy": up_healthy,
                        "cooldown_remaining_ms": cooldown.map(ms),
                        "last_error": pool.and_then(|p| p.last_error()),
                        "in_flight": live.in_flight.load(Ordering::Relaxed),
                        "budgets": s["deployments"].get(i).cloned().unwrap_or(Value::Null),
                    })
                })
                .collect();
            json!({
                "name": m.name,
                "aliases": m.aliases,
                "strategy": m.strategy.as_str(),
                "fallbacks": m.fallbacks,
                "queue": {
                    "depth": s.get("queue_depth").cloned().unwrap_or(json!(0)),
                    "max_size": m.queue.max_size,
                    "max_wait_ms": ms(m.queue.max_wait),
                    "active": !s.is_null(),
                },
                "deployments": deployments,
            })
        })
        .collect();
    let upstreams: Vec<Value> = state
        .upstreams
        .iter()
        .map(|p| {
            let c = &p.cfg;
            let hc = &c.health_check;
            json!({
                "name": c.name,
                "provider": c.provider.as_str(),
                "url": crate::config::secret::redact_url(&c.url.raw),
                "healthy": p.healthy(),
                "addresses": p.address_count(),
                "last_error": p.last_error(),
                "health_check": {
                    "active": hc.interval.is_some(),
                    "interval_ms": hc.interval.map(ms),
                    "path": hc.path,
                    "timeout_ms": ms(hc.timeout),
                    "unhealthy_after": hc.unhealthy_after,
                    "healthy_after": hc.healthy_after,
                },
                "limits": {"rpm": c.limits.rpm, "tpm": c.limits.tpm},
            })
        })
        .collect();
    json!({"models": models, "upstreams": upstreams, "state_errors": sched["state_errors"]})
}

/// The most recent requests that pass the query's `model`, `key`, `status` and `limit`.
pub fn requests(shared: &Shared, query: Option<&str>) -> Value {
    let filter = RecentFilter {
        model: query_param(query, "model"),
        key: query_param(query, "key"),
        status: query_param(query, "status"),
        limit: query_param(query, "limit").and_then(|l| l.parse().ok()),
    };
    shared.timeline.requests_json(&filter)
}

/// Days since the Unix epoch of a `YYYY-MM-DD` date.
fn day_number(s: &str) -> Option<u64> {
    let mut it = s.splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if s.len() != 10 || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    u64::try_from(era * 146_097 + doe - 719_468).ok()
}

/// Spend per day by model and key between `start` and `end` (`YYYY-MM-DD`, both included; default
/// the last 7 days), from the console's own record since this process started.
pub fn spend(shared: &Shared, query: Option<&str>) -> Result<Value, String> {
    let today = crate::metrics::timeline::now_ms() / 86_400_000;
    let parse = |name: &str, default: u64| -> Result<u64, String> {
        match query_param(query, name) {
            None => Ok(default),
            Some(s) => day_number(&s).ok_or_else(|| format!("{name} must be YYYY-MM-DD")),
        }
    };
    let end = parse("end", today)?;
    let start = parse("start", end.saturating_sub(6))?;
    let mut v = shared.timeline.spend_json(start, end);
    v["source"] = json!("process");
    Ok(v)
}

/// The running config, redacted, as YAML; its warnings.
pub fn config(cfg: &Config) -> Value {
    let yaml = serde_yaml::to_string(&cfg.redacted).unwrap_or_else(|e| format!("# {e}"));
    json!({
        "yaml": yaml,
        "warnings": cfg.warnings.0.iter().map(|w| json!({"path": w.path, "message": w.message})).collect::<Vec<_>>(),
        "summary": cfg.summary(),
    })
}

/// Management paths the console may call in process.
fn manageable(path: &str) -> bool {
    ["/key/", "/team/", "/customer/", "/audit/"]
        .iter()
        .any(|p| path.starts_with(p))
        || path == "/spend/logs"
        || path == "/global/spend/report"
}

/// Field names that would carry a key's hash (LiteLLM calls it `token`): dropped from every
/// management answer before it reaches the page.
const HASH_FIELDS: &[&str] = &["token", "hash", "key_hash", "hashed_token", "api_key_hash"];

fn drop_hashes(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !HASH_FIELDS.contains(&k.as_str()));
            m.values_mut().for_each(drop_hashes);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_hashes),
        _ => {}
    }
}

/// One management call (`path` like `/key/list`), in process, as the master key would make it.
pub async fn manage(
    shared: &Shared,
    method: &http::Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> (u16, Value) {
    if !manageable(path) {
        return (
            404,
            json!({"error": {"message": "not a management call", "type": "invalid_request_error", "param": null, "code": "not_found"}}),
        );
    }
    let Some(keys) = shared.keys.clone() else {
        return (
            404,
            json!({"error": {"message": "virtual keys need server.master_key (and state.database) at start", "type": "invalid_request_error", "param": null, "code": "not_available"}}),
        );
    };
    let (status, mut v) = crate::keys::handle_as(
        &keys,
        crate::keys::Actor::Console,
        method,
        path,
        query,
        body,
    )
    .await;
    drop_hashes(&mut v);
    (status, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(day_number("1970-01-01"), Some(0));
        assert_eq!(day_number("2024-03-01"), Some(19_783));
        assert_eq!(day_number("2024-3-1"), None);
        assert_eq!(day_number("2024-13-01"), None);
        assert_eq!(day_number("nope"), None);
    }

    #[test]
    fn hashes_are_dropped_everywhere() {
        let mut v = json!({"keys": [{"key_id": "k", "token": "ab12", "nested": {"hash": "x"}}], "key": "sk-shown-once"});
        drop_hashes(&mut v);
        assert_eq!(
            v,
            json!({"keys": [{"key_id": "k", "nested": {}}], "key": "sk-shown-once"})
        );
    }

    #[test]
    fn only_management_paths() {
        assert!(manageable("/key/list"));
        assert!(manageable("/team/new"));
        assert!(manageable("/global/spend/report"));
        assert!(!manageable("/v1/chat/completions"));
        assert!(!manageable("/spend/logsx"));
    }
}
