//! The audit log: every create, update and delete of a key, team or end user, and every config
//! reload — who did it, what changed, when. Entries take LiteLLM's audit-log shape
//! (`changed_by`, `action`, `table_name`, `object_id`, `before_value`, `updated_values`,
//! `updated_at`).
//!
//! Secrets never enter it: keys are named by their `key_id` and described by the same public fields
//! `/key/info` shows (no secret, no hash); reloads record the paths of the settings that changed,
//! never their values (the redacted config would hide secrets, but values such as upstream URLs are
//! not needed to know what changed).

use crate::pricing::Micros;
use serde_json::{json, Map, Value};

/// Who made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// The master key, on a client listener (`/key/*`, `/team/*`, `/customer/*`).
    Master,
    /// The admin listener with `admin.token` presented (`POST /reload`).
    AdminToken,
    /// The admin listener with no token configured.
    Admin,
    /// `SIGHUP`.
    Signal,
    /// The command line (`llmproxy keys ...`).
    Cli,
    /// A signed-in web console session (`/ui`).
    Console,
}

impl Actor {
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::Master => "master",
            Actor::AdminToken => "admin_token",
            Actor::Admin => "admin",
            Actor::Signal => "sighup",
            Actor::Cli => "cli",
            Actor::Console => "console",
        }
    }
}

/// One audit-log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Assigned by the database (0 before it is stored).
    pub id: i64,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// [`Actor::as_str`].
    pub changed_by: String,
    /// `created`, `updated`, `deleted`, `reloaded`, `reload_failed`.
    pub action: String,
    /// `keys`, `teams`, `customers`, `config`.
    pub table_name: String,
    /// The key_id, team_id or end-user id; none for reloads.
    pub object_id: Option<String>,
    /// The changed fields' values before (updates), or the whole object (deletes).
    pub before_value: Value,
    /// The changed fields' values after (updates), or the whole object (creates); for reloads, the
    /// result and the changed setting paths.
    pub updated_values: Value,
}

impl AuditEntry {
    pub fn new(actor: Actor, action: &str, table_name: &str, object_id: Option<&str>) -> Self {
        AuditEntry {
            id: 0,
            at_ms: now_ms(),
            changed_by: actor.as_str().to_string(),
            action: action.to_string(),
            table_name: table_name.to_string(),
            object_id: object_id.map(str::to_string),
            before_value: Value::Null,
            updated_values: Value::Null,
        }
    }

    /// The JSON the API and the CLI print.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "updated_at": super::units::iso8601_ms(self.at_ms),
            "changed_by": self.changed_by,
            "action": self.action,
            "table_name": self.table_name,
            "object_id": self.object_id,
            "before_value": self.before_value,
            "updated_values": self.updated_values,
        })
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The fields that differ between two public descriptions: `(before, after)`, each an object of
/// the changed fields only. Fields that only move with traffic (`spend`) are left out.
pub fn diff(before: &Map<String, Value>, after: &Map<String, Value>) -> (Value, Value) {
    let mut b = Map::new();
    let mut a = Map::new();
    for (k, v) in after {
        if IGNORED.contains(&k.as_str()) {
            continue;
        }
        let old = before.get(k).unwrap_or(&Value::Null);
        if old != v {
            b.insert(k.clone(), old.clone());
            a.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in before {
        if !after.contains_key(k) && !IGNORED.contains(&k.as_str()) {
            b.insert(k.clone(), v.clone());
            a.insert(k.clone(), Value::Null);
        }
    }
    (Value::Object(b), Value::Object(a))
}

/// Description fields that change with traffic, not with an administrator's action.
const IGNORED: &[&str] = &["spend", "total_spend", "model_spend"];

/// At most this many changed paths are recorded per reload (a rewrite of a big config is summed up).
pub const MAX_RELOAD_PATHS: usize = 100;

/// The paths (`models[0].deployments[1].weight`) whose values differ between two configs (as JSON,
/// redacted), at most [`MAX_RELOAD_PATHS`]; the second value is how many differ in all.
pub fn changed_paths(old: &Value, new: &Value) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut total = 0;
    walk(old, new, String::new(), &mut out, &mut total);
    (out, total)
}

fn walk(old: &Value, new: &Value, path: String, out: &mut Vec<String>, total: &mut usize) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                    p,
                    out,
                    total,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                walk(
                    a.get(i).unwrap_or(&Value::Null),
                    b.get(i).unwrap_or(&Value::Null),
                    format!("{path}[{i}]"),
                    out,
                    total,
                );
            }
        }
        _ => {
            *total += 1;
            if out.len() < MAX_RELOAD_PATHS {
                out.push(if path.is_empty() {
                    "(root)".into()
                } else {
                    path
                });
            }
        }
    }
}

/// USD as the JSON APIs show it (a number of dollars) from exact micro-dollars.
pub fn usd(m: Micros) -> Value {
    json!(m.as_usd_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_keeps_only_changed_fields() {
        let before = json!({"models": ["a"], "rpm": 5, "spend": 1.0, "key_id": "k1"});
        let after = json!({"models": ["a", "b"], "rpm": 5, "spend": 2.0, "key_id": "k1"});
        let (b, a) = diff(before.as_object().unwrap(), after.as_object().unwrap());
        assert_eq!(b, json!({"models": ["a"]}));
        assert_eq!(a, json!({"models": ["a", "b"]}));
    }

    #[test]
    fn reload_paths() {
        let old = json!({"models": [{"name": "a", "weight": 1}], "admin": {"token": "***"}});
        let new = json!({"models": [{"name": "a", "weight": 2}, {"name": "b"}], "admin": {"token": "***"}});
        let (paths, total) = changed_paths(&old, &new);
        assert_eq!(paths, vec!["models[0].weight", "models[1]"]);
        assert_eq!(total, 2);
        assert_eq!(changed_paths(&old, &old).1, 0);
    }
}
