//! `Secret`: a string that never prints. API keys, passwords and tokens from the config live here so a
//! stray `{:?}` or a `/config` dump cannot leak them.

use std::fmt;

/// A secret value; `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The plain value, for the one place that must send it (an upstream request header).
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Keys whose values are secrets wherever they appear in the YAML tree.
const SECRET_KEYS: &[&str] = &[
    "token",
    "password",
    "master_key",
    "api_key",
    "key",
    "public_key",
    "secret_key",
    "secret_access_key",
    "session_token",
];

/// Replace every secret in a config tree by `"***"`: secret keys, auth values, sensitive header-op
/// values and passwords inside URLs (`redis://:pw@host`).
pub fn redact(v: &serde_yaml::Value) -> serde_yaml::Value {
    redact_in(v, None)
}

/// Whether a header with this name carries a credential.
pub fn sensitive_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "authorization" || n.contains("key") || n.contains("token") || n.contains("secret")
}

fn redact_in(v: &serde_yaml::Value, parent_key: Option<&str>) -> serde_yaml::Value {
    use serde_yaml::Value;
    const STARS: &str = "***";
    match v {
        Value::Mapping(m) => {
            // auth: {type: header, name: x, value: SECRET}; headers: {op, key: Authorization, value: ...}
            let header_key = m.get("key").and_then(|k| k.as_str()).map(|k| {
                sensitive_header(k) || m.get("secret").and_then(|s| s.as_bool()) == Some(true)
            });
            let mut out = serde_yaml::Mapping::new();
            for (k, val) in m {
                let key = k.as_str().unwrap_or_default();
                let secret = match key {
                    "value" => parent_key == Some("auth") || header_key.unwrap_or(false),
                    "key" => parent_key != Some("headers_item"),
                    _ => SECRET_KEYS.contains(&key),
                };
                let new = if secret && !val.is_null() && val.as_str() != Some("") {
                    Value::String(STARS.into())
                } else if key == "headers" {
                    match val {
                        Value::Sequence(items) => Value::Sequence(
                            items
                                .iter()
                                .map(|i| redact_in(i, Some("headers_item")))
                                .collect(),
                        ),
                        other => redact_in(other, Some(key)),
                    }
                } else if let Value::String(s) = val {
                    Value::String(redact_url(s))
                } else {
                    redact_in(val, Some(key))
                };
                out.insert(k.clone(), new);
            }
            Value::Mapping(out)
        }
        Value::Sequence(items) => {
            Value::Sequence(items.iter().map(|i| redact_in(i, parent_key)).collect())
        }
        other => other.clone(),
    }
}

/// The password of `scheme://user:password@host/...`, if the URL has one.
pub fn url_password(s: &str) -> Option<&str> {
    let scheme_end = s.find("://")?;
    let rest = &s[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    let (_, pass) = rest[..at].split_once(':')?;
    Some(pass).filter(|p| !p.is_empty())
}

/// `scheme://user:password@host` → `scheme://user:***@host`.
pub fn redact_url(s: &str) -> String {
    if let Some(scheme_end) = s.find("://") {
        let rest = &s[scheme_end + 3..];
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            return format!("{}{}:***{}", &s[..scheme_end + 3], user, &rest[at..]);
        }
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides() {
        assert_eq!(format!("{:?}", Secret::new("sk-1")), "\"***\"");
    }

    #[test]
    fn redacts_tree() {
        let y: serde_yaml::Value = serde_yaml::from_str(
            "upstreams:\n- name: a\n  auth: {type: header, name: api-key, value: s1}\n  headers:\n  - {op: insert, key: X-Team, value: research}\n  - {op: insert, key: x-api-key, value: s2}\nserver: {master_key: s3}\nstate: {redis: 'redis://:pw@h:6379/0'}\n",
        )
        .unwrap();
        let out = serde_yaml::to_string(&redact(&y)).unwrap();
        assert!(
            !out.contains("s1")
                && !out.contains("s2")
                && !out.contains("s3")
                && !out.contains("pw")
        );
        assert!(out.contains("research") && out.contains("api-key"));
    }
}
