//! A YAML walker that validates while it reads and collects *every* error with its key path.
//!
//! serde's `deny_unknown_fields` stops at the first problem; operators want `nginx -t`, which lists
//! them all. Each config section reads its part of the tree through [`Node`] and [`Map`], which expand
//! `${VAR}` / `${VAR:-fallback}` in strings, parse durations and sizes, and report unknown keys with the
//! nearest valid key ("did you mean ...").

use serde_yaml::Value;
use std::fmt;
use std::time::Duration;

/// One configuration problem, with the path of the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// All the problems found in one config file.
#[derive(Debug, Clone, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn push(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.to_string(),
            message: message.into(),
        });
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Where environment variables come from (a map in tests, the process environment otherwise).
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// The reading context: environment, collected errors and warnings.
pub struct Reader<'e> {
    pub env: &'e dyn Env,
    pub errors: ConfigErrors,
    /// Settings that are accepted but have no effect yet (listed by `check`, logged at start).
    pub warnings: ConfigErrors,
}

impl<'e> Reader<'e> {
    pub fn new(env: &'e dyn Env) -> Self {
        Reader {
            env,
            errors: ConfigErrors::default(),
            warnings: ConfigErrors::default(),
        }
    }

    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(path, message);
    }

    pub fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(path, message);
    }
}

/// A value in the tree and its path.
#[derive(Clone, Copy)]
pub struct Node<'a> {
    pub value: &'a Value,
    pub path: &'a str,
}

/// A mapping whose keys were checked against the allowed set.
pub struct Map<'a> {
    map: &'a serde_yaml::Mapping,
    path: String,
}

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

impl<'a> Node<'a> {
    pub fn new(value: &'a Value, path: &'a str) -> Self {
        Node { value, path }
    }

    pub fn is_null(&self) -> bool {
        self.value.is_null()
    }

    /// Read a mapping, reporting keys outside `allowed` (with a suggestion).
    pub fn map(&self, r: &mut Reader, allowed: &[&str]) -> Option<Map<'a>> {
        let map = match self.value {
            Value::Mapping(m) => m,
            Value::Null => {
                return Some(Map {
                    map: empty_mapping(),
                    path: self.path.to_string(),
                })
            }
            other => {
                r.error(
                    self.path,
                    format!("expected a mapping, found {}", kind(other)),
                );
                return None;
            }
        };
        for k in map.keys() {
            match k.as_str() {
                Some(key) if allowed.contains(&key) => {}
                Some(key) => {
                    let suggestion = nearest(key, allowed)
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    r.error(
                        &join(self.path, key),
                        format!(
                            "unknown key{suggestion}; valid keys here: {}",
                            allowed.join(", ")
                        ),
                    );
                }
                None => r.error(self.path, "keys must be strings"),
            }
        }
        Some(Map {
            map,
            path: self.path.to_string(),
        })
    }

    /// Read a list, calling `f` with each element and its path.
    pub fn list<T>(
        &self,
        r: &mut Reader,
        mut f: impl FnMut(&mut Reader, Node) -> Option<T>,
    ) -> Vec<T> {
        match self.value {
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    let p = index(self.path, i);
                    f(r, Node::new(v, &p))
                })
                .collect(),
            Value::Null => Vec::new(),
            other => {
                r.error(self.path, format!("expected a list, found {}", kind(other)));
                Vec::new()
            }
        }
    }

    /// Like [`Node::list`], but an empty list is an error.
    pub fn non_empty_list<T>(
        &self,
        r: &mut Reader,
        f: impl FnMut(&mut Reader, Node) -> Option<T>,
    ) -> Vec<T> {
        if self.value.as_sequence().is_some_and(|s| s.is_empty()) {
            r.error(self.path, "the list must not be empty");
        }
        self.list(r, f)
    }

    /// A string, with `${VAR}` and `${VAR:-fallback}` expanded. Numbers and booleans are accepted as
    /// their text (YAML users write `api_version: 2024-10-21` unquoted).
    pub fn string(&self, r: &mut Reader) -> Option<String> {
        let raw = match self.value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                r.error(
                    self.path,
                    format!("expected a string, found {}", kind(other)),
                );
                return None;
            }
        };
        match expand_env(&raw, r.env) {
            Ok(s) => Some(s),
            Err(msg) => {
                r.error(self.path, msg);
                None
            }
        }
    }

    pub fn list_of_strings(&self, r: &mut Reader) -> Vec<String> {
        self.list(r, |r, n| n.string(r))
    }

    pub fn bool(&self, r: &mut Reader) -> Option<bool> {
        match self.value {
            Value::Bool(b) => Some(*b),
            Value::String(_) => match self.string(r)?.as_str() {
                "true" => Some(true),
                "false" => Some(false),
                other => {
                    r.error(
                        self.path,
                        format!("expected true or false, found `{other}`"),
                    );
                    None
                }
            },
            other => {
                r.error(
                    self.path,
                    format!("expected a boolean, found {}", kind(other)),
                );
                None
            }
        }
    }

    pub fn u64(&self, r: &mut Reader) -> Option<u64> {
        match self.value {
            Value::Number(n) if n.as_u64().is_some() => n.as_u64(),
            Value::String(_) => {
                let s = self.string(r)?;
                match s.trim().parse::<u64>() {
                    Ok(v) => Some(v),
                    Err(_) => {
                        r.error(
                            self.path,
                            format!("expected a non-negative integer, found `{s}`"),
                        );
                        None
                    }
                }
            }
            other => {
                r.error(
                    self.path,
                    format!("expected a non-negative integer, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// A finite number (integer or decimal).
    pub fn f64(&self, r: &mut Reader) -> Option<f64> {
        let v = match self.value {
            Value::Number(n) => n.as_f64(),
            Value::String(_) => self.string(r)?.trim().parse::<f64>().ok(),
            _ => None,
        };
        match v {
            Some(v) if v.is_finite() => Some(v),
            _ => {
                r.error(
                    self.path,
                    format!("expected a number, found {}", kind(self.value)),
                );
                None
            }
        }
    }

    /// A duration with a unit: `250ms`, `10s`, `5m`, `1h`, `1d`.
    pub fn duration(&self, r: &mut Reader) -> Option<Duration> {
        if let Value::Number(_) = self.value {
            r.error(self.path, "a duration needs a unit, e.g. `10s` or `250ms`");
            return None;
        }
        let s = self.string(r)?;
        match parse_duration(&s) {
            Some(d) => Some(d),
            None => {
                r.error(
                    self.path,
                    format!("invalid duration `{s}`: use a number and a unit (ms, s, m, h, d), e.g. `10s`, at most 31 years"),
                );
                None
            }
        }
    }

    /// A size: `512KiB`, `8MiB`, `1GiB`, `1000B` (also KB/MB/GB, decimal).
    pub fn size(&self, r: &mut Reader) -> Option<usize> {
        if let Value::Number(n) = self.value {
            if let Some(v) = n.as_u64() {
                return usize::try_from(v).ok();
            }
        }
        let s = self.string(r)?;
        match parse_size(&s) {
            Some(v) => Some(v),
            None => {
                r.error(
                    self.path,
                    format!("invalid size `{s}`: use a number and a unit (B, KiB, MiB, GiB), e.g. `8MiB`"),
                );
                None
            }
        }
    }

    /// One of a fixed set of words.
    pub fn choice<T: Copy>(&self, r: &mut Reader, choices: &[(&str, T)]) -> Option<T> {
        let s = self.string(r)?;
        if let Some((_, v)) = choices.iter().find(|(name, _)| *name == s) {
            return Some(*v);
        }
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let suggestion = nearest(&s, &names)
            .map(|n| format!(" (did you mean `{n}`?)"))
            .unwrap_or_default();
        r.error(
            self.path,
            format!("`{s}` is not one of: {}{suggestion}", names.join(" | ")),
        );
        None
    }
}

impl<'a> Map<'a> {
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Call `f` with the value of `key` when present (and not null).
    pub fn with<T>(
        &self,
        r: &mut Reader,
        key: &str,
        f: impl FnOnce(&mut Reader, Node) -> Option<T>,
    ) -> Option<T> {
        let v = self.map.get(key)?;
        if v.is_null() {
            return None;
        }
        let p = join(&self.path, key);
        f(r, Node::new(v, &p))
    }

    /// Like [`Map::with`], but a missing key is an error.
    pub fn required<T>(
        &self,
        r: &mut Reader,
        key: &str,
        f: impl FnOnce(&mut Reader, Node) -> Option<T>,
    ) -> Option<T> {
        match self.map.get(key) {
            Some(v) if !v.is_null() => {
                let p = join(&self.path, key);
                f(r, Node::new(v, &p))
            }
            _ => {
                r.error(&join(&self.path, key), "required key is missing");
                None
            }
        }
    }

    /// The value of `key` as written (before any reading), for cross-field checks.
    pub fn raw(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    /// Keys the reference documents but this build does not implement yet: reject them clearly rather
    /// than silently ignoring a limit or a cache the operator believes is active.
    pub fn not_yet(&self, r: &mut Reader, keys: &[&str]) {
        for k in keys {
            if self.has(k) {
                r.error(
                    &join(&self.path, k),
                    "this setting is documented in the reference but not implemented by this version of llmproxy yet",
                );
            }
        }
    }
}

fn empty_mapping() -> &'static serde_yaml::Mapping {
    static EMPTY: std::sync::OnceLock<serde_yaml::Mapping> = std::sync::OnceLock::new();
    EMPTY.get_or_init(serde_yaml::Mapping::new)
}

/// The closest allowed word, if it is close enough to be a plausible typo.
pub fn nearest<'s>(word: &str, allowed: &[&'s str]) -> Option<&'s str> {
    allowed
        .iter()
        .map(|a| (strsim::levenshtein(word, a), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

/// Expand `${NAME}` and `${NAME:-fallback}`. A missing variable without fallback is an error.
pub fn expand_env(s: &str, env: &dyn Env) -> Result<String, String> {
    if !s.contains("${") {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unterminated `${{` in `{s}`"));
        };
        let expr = &after[..end];
        let (name, fallback) = match expr.split_once(":-") {
            Some((n, f)) => (n, Some(f)),
            None => (expr, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid variable name `{name}` in `${{{expr}}}`"));
        }
        match (env.var(name), fallback) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(f)) => out.push_str(f),
            (None, None) => {
                return Err(format!(
                    "environment variable `{name}` is not set (use `${{{name}:-fallback}}` for a default)"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The longest duration a config may name (about 31 years): beyond it a duration is a typo, and
/// deadlines computed from it (`Instant + duration`) would overflow.
pub const MAX_DURATION_SECS: f64 = 1e9;

pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return None,
    };
    if secs > MAX_DURATION_SECS {
        return None;
    }
    Duration::try_from_secs_f64(secs).ok()
}

pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    usize::try_from(n.checked_mul(mult)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    pub struct MapEnv(pub HashMap<&'static str, &'static str>);
    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|s| s.to_string())
        }
    }

    #[test]
    fn expands_env() {
        let env = MapEnv(HashMap::from([("A", "x")]));
        assert_eq!(expand_env("a${A}b", &env).unwrap(), "axb");
        assert_eq!(expand_env("${B:-fb}", &env).unwrap(), "fb");
        assert_eq!(expand_env("${B:-}", &env).unwrap(), "");
        assert!(expand_env("${B}", &env).unwrap_err().contains("`B`"));
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("10"), None);
        // Found by the config fuzz target: a duration too large for `Duration` panicked.
        assert_eq!(
            parse_duration("66666666666666666666666666666666666666615s"),
            None
        );
        assert_eq!(parse_duration("1000000001s"), None);
        assert_eq!(
            parse_duration("11574d"),
            Some(Duration::from_secs(11574 * 86400))
        );
        assert_eq!(parse_size("8MiB"), Some(8 << 20));
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size("8XB"), None);
    }

    #[test]
    fn suggests_nearest() {
        assert_eq!(nearest("modles", &["models", "routes"]), Some("models"));
        assert_eq!(nearest("zzzzzz", &["models", "routes"]), None);
    }
}
