//! Command-line settings laid over a config (LiteLLM's proxy flags: `--host`, `--port`,
//! `--num_workers`, `--temperature`, `--max_tokens`, `--request_timeout`, `--drop_params`,
//! `--add_function_to_prompt`, `--debug`).
//!
//! They are applied to the native document before it is read, so they are validated like the file
//! and survive reloads (the reloader applies them again to the re-read file).

use serde_yaml::{Mapping, Value};
use std::net::{IpAddr, SocketAddr};

/// What the command line changes in the config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// The first listener's address (`--host`).
    pub host: Option<IpAddr>,
    /// The first listener's port (`--port`).
    pub port: Option<u16>,
    /// `admin.listen` (`--admin-listen`).
    pub admin_listen: Option<String>,
    /// `server.threads` (`--num_workers`).
    pub threads: Option<u64>,
    /// A `temperature` default on every deployment (requests that set one keep theirs).
    pub temperature: Option<f64>,
    /// A `max_tokens` default on every deployment.
    pub max_tokens: Option<u64>,
    /// Seconds: every model's `timeout` and every upstream's `client.request_timeout`.
    pub request_timeout: Option<f64>,
    /// `drop_params: true` for every model.
    pub drop_params: bool,
    /// `add_function_to_prompt: true` for every model.
    pub add_function_to_prompt: bool,
    /// `logging.level: debug`.
    pub debug: bool,
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

/// Set `m[key][field] = value`, making `m[key]` a mapping (or replacing what is not one).
fn set(m: &mut Mapping, key: &str, field: &str, value: Value) {
    let entry = m.entry(s(key)).or_insert(Value::Null);
    if !entry.is_mapping() {
        *entry = Value::Mapping(Mapping::new());
    }
    if let Value::Mapping(inner) = entry {
        inner.insert(s(field), value);
    }
}

/// Every mapping of the list at `m[key]`.
fn items<'a>(m: &'a mut Mapping, key: &str) -> impl Iterator<Item = &'a mut Mapping> {
    m.get_mut(key)
        .and_then(Value::as_sequence_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_mapping_mut)
}

impl Overrides {
    /// Lay these settings over a native document.
    pub fn apply(&self, doc: &mut Value) {
        if *self == Overrides::default() {
            return;
        }
        let Value::Mapping(root) = doc else { return };
        if self.host.is_some() || self.port.is_some() {
            if !root.get("server").is_some_and(Value::is_mapping) {
                root.insert(s("server"), Value::Mapping(Mapping::new()));
            }
            let Some(server) = root.get_mut("server").and_then(Value::as_mapping_mut) else {
                return;
            };
            let listeners = server
                .entry(s("listeners"))
                .or_insert_with(|| Value::Sequence(Vec::new()));
            if !listeners.is_sequence() {
                *listeners = Value::Sequence(Vec::new());
            }
            if let Value::Sequence(list) = listeners {
                if list.is_empty() {
                    let mut l = Mapping::new();
                    l.insert(s("name"), s("main"));
                    list.push(Value::Mapping(l));
                }
                if let Some(Value::Mapping(first)) = list.first_mut() {
                    let current = first
                        .get("listen")
                        .and_then(Value::as_str)
                        .and_then(|a| a.parse::<SocketAddr>().ok());
                    let host = self
                        .host
                        .or(current.map(|a| a.ip()))
                        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
                    let port = self.port.or(current.map(|a| a.port())).unwrap_or(4000);
                    first.insert(s("listen"), s(&SocketAddr::new(host, port).to_string()));
                }
            }
        }
        if let Some(a) = &self.admin_listen {
            set(root, "admin", "listen", s(a));
        }
        if let Some(n) = self.threads {
            set(root, "server", "threads", Value::from(n));
        }
        if self.debug {
            set(root, "logging", "level", s("debug"));
        }
        if self.drop_params {
            root.insert(s("drop_params"), Value::Bool(true));
        }
        let timeout = self.request_timeout.map(super::litellm::duration);
        if let Some(t) = &timeout {
            for u in items(root, "upstreams") {
                set(u, "client", "request_timeout", s(t));
            }
        }
        for m in items(root, "models") {
            if let Some(t) = &timeout {
                m.insert(s("timeout"), s(t));
            }
            if self.drop_params {
                m.insert(s("drop_params"), Value::Bool(true));
            }
            if self.add_function_to_prompt {
                m.insert(s("add_function_to_prompt"), Value::Bool(true));
            }
            for d in items(m, "deployments") {
                if let Some(t) = self.temperature {
                    set(d, "params", "temperature", Value::from(t));
                }
                if let Some(n) = self.max_tokens {
                    set(d, "params", "max_tokens", Value::from(n));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lays_flags_over_a_document() {
        let mut doc: Value = serde_yaml::from_str(
            "server: {listeners: [{name: main, listen: '127.0.0.1:4000'}]}\nupstreams: [{name: a, url: 'http://x'}]\nmodels: [{name: m, deployments: [{upstream: a, model: m, params: {temperature: 0.9}}]}]\n",
        )
        .unwrap();
        Overrides {
            port: Some(8080),
            threads: Some(3),
            temperature: Some(0.25),
            max_tokens: Some(50),
            request_timeout: Some(1.5),
            drop_params: true,
            add_function_to_prompt: true,
            debug: true,
            ..Overrides::default()
        }
        .apply(&mut doc);
        let out = serde_yaml::to_string(&doc).unwrap();
        for needle in [
            "listen: 127.0.0.1:8080",
            "threads: 3",
            "temperature: 0.25",
            "max_tokens: 50",
            "request_timeout: 1500ms",
            "timeout: 1500ms",
            "drop_params: true",
            "add_function_to_prompt: true",
            "level: debug",
        ] {
            assert!(out.contains(needle), "missing `{needle}` in:\n{out}");
        }
    }
}
