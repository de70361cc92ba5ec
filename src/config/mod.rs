//! Configuration: YAML → validated runtime types.
//!
//! Each top-level section is one file with one validated type (`server`, `admin`, `upstreams`,
//! `models`, `routes`, `logging`, `keys`); a new feature adds its section the same way. Reading goes through
//! [`reader`], which collects every error with its key path, so `llmproxy check` lists them all at once.
//! Cross references (a deployment's upstream, a route's upstream, a listener's models) are checked here.
//!
//! Every way in goes through [`from_value`]: a LiteLLM-format document (a top-level
//! `model_list`) is first translated into the native one ([`litellm`]), command-line settings are
//! laid over it ([`overrides`]), then the native reader validates it; errors of a LiteLLM file are
//! reported at its own key paths.

pub mod admin;
pub mod batch;
pub mod cache;
pub mod keys;
pub mod litellm;
pub mod logging;
pub mod models;
pub mod overrides;
pub mod reader;
pub mod routes;
pub mod secret;
pub mod server;
pub mod state;
pub mod template;
pub mod tracing;
pub mod upstreams;

pub use admin::AdminConfig;
pub use litellm::QuickStart;
pub use logging::{AccessLog, LoggingConfig};
pub use models::{Deployment, Model, Pricing, Strategy};
pub use overrides::Overrides;
pub use reader::{ConfigError, ConfigErrors, Env, ProcessEnv};
pub use routes::Route;
pub use secret::Secret;
pub use server::{ClientTimeouts, Listener, ServerConfig};
pub use upstreams::{Auth, HeaderOp, HeaderOpKind, Provider, Upstream, UpstreamId};

use reader::{Node, Reader};
use std::collections::HashMap;
use std::path::Path;

/// The embedded default config (`conf/llmproxy.yaml`), used when no `-c` is given.
pub const DEFAULT_CONFIG: &str = include_str!("../../conf/llmproxy.yaml");

/// A validated configuration: no leftover options, every reference resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub upstreams: Vec<Upstream>,
    pub models: Vec<Model>,
    pub routes: Vec<Route>,
    pub logging: LoggingConfig,
    pub state: state::StateConfig,
    pub cache: cache::CacheConfig,
    pub tracing: tracing::TracingConfig,
    /// `keys:` (governance: teams, end users, spend log).
    pub keys: keys::KeysConfig,
    /// `admin_ui`: the web console at `GET /ui` on the admin listener (default on).
    pub admin_ui: bool,
    /// The parsed YAML with secrets redacted, for `GET /config` (for a LiteLLM file: its
    /// translation).
    pub redacted: serde_json::Value,
    /// Settings accepted but without effect (unsupported LiteLLM keys, ...): `check` lists them,
    /// `run` logs them once.
    pub warnings: ConfigErrors,
    /// A LiteLLM file's `environment_variables` (also laid over the environment while reading it).
    pub environment: Vec<(String, Secret)>,
}

/// A config read for `llmproxy check`: the result, and the warnings whether it is valid or not.
pub struct Report {
    pub config: Result<Config, ConfigErrors>,
    pub warnings: ConfigErrors,
    /// Whether the file is in LiteLLM's format.
    pub litellm: bool,
}

const TOP_KEYS: &[&str] = &[
    "server",
    "admin",
    "state",
    "upstreams",
    "models",
    "routes",
    "cache",
    "logging",
    "tracing",
    "keys",
    "admin_ui",
    "drop_params",
];

/// Read and validate a config file (native or LiteLLM format).
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with(path, &Overrides::default(), &ProcessEnv)
}

/// Read and validate a config file with command-line settings laid over it.
pub fn load_with(
    path: &Path,
    overrides: &Overrides,
    env: &dyn Env,
) -> Result<Config, ConfigErrors> {
    report(path, overrides, env).config
}

/// Read and validate a config file, keeping the warnings of an invalid one too (`llmproxy check`).
pub fn report(path: &Path, overrides: &Overrides, env: &dyn Env) -> Report {
    match read_file(path) {
        Ok(value) => from_value(&value, env, overrides),
        Err(errs) => Report {
            config: Err(errs),
            warnings: ConfigErrors::default(),
            litellm: false,
        },
    }
}

/// The YAML document of a file.
pub fn read_file(path: &Path) -> Result<serde_yaml::Value, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let mut errs = ConfigErrors::default();
        errs.push("", format!("cannot read {}: {e}", path.display()));
        errs
    })?;
    yaml(&text)
}

fn yaml(text: &str) -> Result<serde_yaml::Value, ConfigErrors> {
    serde_yaml::from_str(text).map_err(|e| {
        let mut errs = ConfigErrors::default();
        let at = e
            .location()
            .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
            .unwrap_or_default();
        errs.push("", format!("invalid YAML{at}: {e}"));
        errs
    })
}

/// Parse and validate config text.
pub fn parse(text: &str, env: &dyn Env) -> Result<Config, ConfigErrors> {
    from_value(&yaml(text)?, env, &Overrides::default()).config
}

/// Validate a parsed document (native or LiteLLM format) with `overrides` laid over it.
pub fn from_value(value: &serde_yaml::Value, env: &dyn Env, overrides: &Overrides) -> Report {
    if !litellm::is_litellm(value) {
        let mut native = value.clone();
        overrides.apply(&mut native);
        let (config, warnings) = read_native(&native, env);
        return Report {
            config,
            warnings,
            litellm: false,
        };
    }
    let mut t = litellm::translate(value, env);
    overrides.apply(&mut t.native);
    from_translation(t, env)
}

/// The quick start (`llmproxy --model provider/id [--api_base URL]`): a one-entry
/// LiteLLM `model_list`, served under `--alias` (else the `--model` text) and its bare id.
pub fn quick_start(
    qs: &QuickStart,
    env: &dyn Env,
    overrides: &Overrides,
) -> Result<Config, ConfigErrors> {
    let mut t = litellm::translate(&qs.document(), env);
    let aliases = qs.aliases();
    if let Some(model) = t
        .native
        .get_mut("models")
        .and_then(|m| m.get_mut(0))
        .and_then(serde_yaml::Value::as_mapping_mut)
    {
        if !aliases.is_empty() {
            model.insert(
                "aliases".into(),
                serde_yaml::Value::Sequence(aliases.into_iter().map(Into::into).collect()),
            );
        }
    }
    overrides.apply(&mut t.native);
    let in_flags = |errs: ConfigErrors| {
        let mut out = ConfigErrors::default();
        for e in errs.0 {
            out.push(&QuickStart::flag_for(&e.path), e.message);
        }
        out
    };
    match from_translation(t, env).config {
        Ok(mut cfg) => {
            cfg.warnings = in_flags(std::mem::take(&mut cfg.warnings));
            Ok(cfg)
        }
        Err(errs) => Err(in_flags(errs)),
    }
}

fn from_translation(t: litellm::Translation, env: &dyn Env) -> Report {
    let overlay = t.env(env);
    let (config, native_warnings) = read_native(&t.native, &overlay);
    let mut warnings = t.warnings.clone();
    warnings.0.extend(t.map_errors(native_warnings).0);
    let config = match config {
        Ok(mut cfg) if t.errors.is_empty() => {
            cfg.warnings = warnings.clone();
            cfg.environment = t
                .environment
                .iter()
                .map(|(k, v)| (k.clone(), Secret::new(v.clone())))
                .collect();
            Ok(cfg)
        }
        Ok(_) => Err(t.errors.clone()),
        Err(errs) => {
            let mut all = t.errors.clone();
            all.0.extend(t.map_errors(errs).0);
            Err(all)
        }
    };
    Report {
        config,
        warnings,
        litellm: true,
    }
}

/// The native reader on a native document: the config (or every error) and the warnings.
fn read_native(
    value: &serde_yaml::Value,
    env: &dyn Env,
) -> (Result<Config, ConfigErrors>, ConfigErrors) {
    let mut r = Reader::new(env);
    let cfg = read(&mut r, value);
    let warnings = std::mem::take(&mut r.warnings);
    let result = match cfg {
        Some(mut cfg) if r.errors.is_empty() => {
            cfg.warnings = warnings.clone();
            Ok(cfg)
        }
        _ => {
            if r.errors.is_empty() {
                r.error("", "invalid configuration");
            }
            Err(r.errors)
        }
    };
    (result, warnings)
}

fn read(r: &mut Reader, value: &serde_yaml::Value) -> Option<Config> {
    let root = Node::new(value, "");
    let m = root.map(r, TOP_KEYS)?;
    let server = m.required(r, "server", server::read);
    let admin = m.with(r, "admin", admin::read).unwrap_or_default();
    let mut upstreams = m
        .with(r, "upstreams", |r, n| Some(n.list(r, upstreams::read)))
        .unwrap_or_default();
    // The default for models that do not set `drop_params` themselves (LiteLLM's global setting).
    let drop_params = m.with(r, "drop_params", |r, n| n.bool(r)).unwrap_or(false);
    let mut models = m
        .with(r, "models", |r, n| {
            Some(n.list(r, |r, n| models::read(r, n, drop_params)))
        })
        .unwrap_or_default();
    let mut routes = m
        .with(r, "routes", |r, n| Some(n.list(r, routes::read)))
        .unwrap_or_default();
    let logging = m.with(r, "logging", logging::read).unwrap_or_default();
    let state = m.with(r, "state", state::read).unwrap_or_default();
    let cache = m.with(r, "cache", cache::read).unwrap_or_default();
    let tracing = m.with(r, "tracing", tracing::read).unwrap_or_default();
    let keys = m.with(r, "keys", keys::read).unwrap_or_default();
    let admin_ui = m.with(r, "admin_ui", |r, n| n.bool(r)).unwrap_or(true);
    // Only a provider without tools acts on it: say so where no deployment of the model has one.
    for (i, model) in models.iter().enumerate() {
        let applies = model.deployments.iter().any(|d| {
            upstreams
                .iter()
                .find(|u| u.name == d.upstream)
                .is_some_and(|u| u.provider == upstreams::Provider::TextGeneration)
        });
        if model.add_function_to_prompt && !applies {
            r.warn(
                &format!("models[{i}].add_function_to_prompt"),
                "has no effect here: tools are described in the system prompt only for `text_generation` deployments, and every other provider takes tools itself",
            );
        }
    }
    if cache.backend == cache::Backend::Redis && state.redis.is_none() {
        r.error("cache.backend", "`redis` needs state.redis to be set");
    }
    let mut server = server?;
    resolve(r, &mut server, &mut upstreams, &mut models, &mut routes);
    batch::check(r, &models, &upstreams);
    let redacted = serde_json::to_value(secret::redact(value)).unwrap_or_default();
    Some(Config {
        server,
        admin,
        upstreams,
        models,
        routes,
        logging,
        state,
        cache,
        tracing,
        keys,
        admin_ui,
        redacted,
        warnings: ConfigErrors::default(),
        environment: Vec::new(),
    })
}

/// Check names are unique and resolve every cross reference.
fn resolve(
    r: &mut Reader,
    server: &mut ServerConfig,
    upstreams: &mut [Upstream],
    models: &mut [Model],
    routes: &mut [Route],
) {
    let mut upstream_idx = HashMap::new();
    for (i, u) in upstreams.iter().enumerate() {
        if upstream_idx.insert(u.name.clone(), i).is_some() {
            r.error(
                &format!("upstreams[{i}].name"),
                format!("duplicate upstream name `{}`", u.name),
            );
        }
    }
    let upstream_names: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
    let unknown_upstream = |r: &mut Reader, path: &str, name: &str| {
        let hint = reader::nearest(name, &upstream_names)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        r.error(path, format!("unknown upstream `{name}`{hint}"));
    };

    let mut model_names: HashMap<String, String> = HashMap::new();
    let mut model_ids: HashMap<String, usize> = HashMap::new();
    for (i, model) in models.iter().enumerate() {
        for name in std::iter::once(&model.name).chain(model.aliases.iter()) {
            model_ids.entry(name.clone()).or_insert(i);
        }
    }
    let mut pending_fallbacks = Vec::new();
    for (i, model) in models.iter_mut().enumerate() {
        let path = format!("models[{i}]");
        for (j, name) in std::iter::once(&model.name)
            .chain(model.aliases.iter())
            .enumerate()
        {
            let p = if j == 0 {
                format!("{path}.name")
            } else {
                format!("{path}.aliases[{}]", j - 1)
            };
            if let Some(prev) = model_names.insert(name.clone(), p.clone()) {
                r.error(&p, format!("`{name}` is already used at {prev}"));
            }
        }
        for (key, list) in [
            ("fallbacks", &model.fallbacks),
            ("context_window_fallbacks", &model.context_window_fallbacks),
        ] {
            pending_fallbacks.push((format!("{path}.{key}"), model.name.clone(), list.clone()));
        }
        let ids = |names: &[String]| -> Vec<usize> {
            names
                .iter()
                .filter_map(|n| model_ids.get(n).copied())
                .filter(|&j| j != i)
                .collect()
        };
        model.fallback_models = ids(&model.fallbacks);
        model.context_window_fallback_models = ids(&model.context_window_fallbacks);
        for (j, d) in model.deployments.iter_mut().enumerate() {
            match upstream_idx.get(&d.upstream) {
                Some(&idx) => d.upstream_id = UpstreamId::new(idx),
                None => {
                    unknown_upstream(r, &format!("{path}.deployments[{j}].upstream"), &d.upstream)
                }
            }
        }
    }
    let mut route_prefixes: HashMap<String, usize> = HashMap::new();
    for (i, route) in routes.iter_mut().enumerate() {
        if route_prefixes.insert(route.prefix.clone(), i).is_some() {
            r.error(
                &format!("routes[{i}].prefix"),
                format!("duplicate route prefix `{}`", route.prefix),
            );
        }
        match upstream_idx.get(&route.upstream) {
            Some(&idx) => {
                route.upstream_id = UpstreamId::new(idx);
                if matches!(upstreams[idx].auth, Auth::AwsSigV4(_)) {
                    r.error(
                        &format!("routes[{i}].upstream"),
                        format!("upstream `{}` signs every request with aws_sigv4, which a passthrough route cannot do (its body streams through unread); serve its models under `models:` instead", route.upstream),
                    );
                }
                if route.allow_paths.is_empty() {
                    route.allow_paths = routes::default_allow_paths(&upstreams[idx]);
                }
            }
            None => unknown_upstream(r, &format!("routes[{i}].upstream"), &route.upstream),
        }
    }
    let known: Vec<&str> = model_names.keys().map(String::as_str).collect();
    for (path, own, list) in pending_fallbacks {
        for (j, f) in list.iter().enumerate() {
            if !model_names.contains_key(f) {
                let hint = reader::nearest(f, &known)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                r.error(
                    &format!("{path}[{j}]"),
                    format!("unknown model `{f}`{hint}"),
                );
            } else if *f == own {
                r.error(
                    &format!("{path}[{j}]"),
                    "a model cannot fall back to itself",
                );
            }
        }
    }
    let mut listener_names = HashMap::new();
    let mut addrs = HashMap::new();
    let prefixes: Vec<&str> = routes.iter().map(|r| r.prefix.as_str()).collect();
    for (i, l) in server.listeners.iter_mut().enumerate() {
        // A listener scoped to some models serves no passthrough route unless it lists it: a route
        // reaches any model of its upstream.
        l.route_scope = match &l.routes {
            None if l.models.is_empty() => server::RouteScope::All,
            None => server::RouteScope::Only(Vec::new()),
            Some(list) => {
                let mut only = Vec::with_capacity(list.len());
                for (j, p) in list.iter().enumerate() {
                    let p = p.trim_end_matches('/');
                    match route_prefixes.get(p) {
                        Some(&idx) => only.push(idx),
                        None => {
                            let hint = reader::nearest(p, &prefixes)
                                .map(|s| format!(" (did you mean `{s}`?)"))
                                .unwrap_or_default();
                            r.error(
                                &format!("server.listeners[{i}].routes[{j}]"),
                                format!("no route has the prefix `{p}`{hint}"),
                            );
                        }
                    }
                }
                server::RouteScope::Only(only)
            }
        };
        if listener_names.insert(l.name.clone(), i).is_some() {
            r.error(
                &format!("server.listeners[{i}].name"),
                format!("duplicate listener name `{}`", l.name),
            );
        }
        if addrs.insert(l.listen, i).is_some() {
            r.error(
                &format!("server.listeners[{i}].listen"),
                format!("address {} is used twice", l.listen),
            );
        }
        for (j, m) in l.models.iter().enumerate() {
            if !model_names.contains_key(m) {
                let hint = reader::nearest(m, &known)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                r.error(
                    &format!("server.listeners[{i}].models[{j}]"),
                    format!("unknown model `{m}`{hint}"),
                );
            }
        }
    }
}

impl Config {
    /// Every credential this config holds, in each form it can take on the wire (a bearer token
    /// alone and in its header, a Basic password and its base64 form, a URL's password), so the
    /// logger can mask them wherever they would appear ([`crate::logging`]).
    pub fn secrets(&self) -> Vec<String> {
        fn header_value(out: &mut Vec<String>, v: &str) {
            out.push(v.to_string());
            if let Some((scheme, rest)) = v.split_once(' ') {
                out.push(rest.to_string());
                if scheme.eq_ignore_ascii_case("basic") {
                    if let Some(pass) = base64::Engine::decode(
                        &base64::engine::general_purpose::STANDARD,
                        rest.trim(),
                    )
                    .ok()
                    .and_then(|d| String::from_utf8(d).ok())
                    .and_then(|up| up.split_once(':').map(|(_, p)| p.to_string()))
                    {
                        out.push(pass);
                    }
                }
            }
        }
        let mut out = Vec::new();
        if let Some(k) = &self.server.master_key {
            out.push(k.expose().to_string());
        }
        if let Some(t) = &self.admin.token {
            out.push(t.expose().to_string());
        }
        for u in &self.upstreams {
            match &u.auth {
                Auth::Header { value, .. } => header_value(&mut out, value.expose()),
                Auth::AwsSigV4(a) => {
                    if let Some(k) = &a.keys {
                        out.push(k.secret_access_key.expose().to_string());
                        if let Some(t) = &k.session_token {
                            out.push(t.expose().to_string());
                        }
                    }
                }
                Auth::None | Auth::Gcp { .. } => {}
            }
            for h in u.headers.iter().filter(|h| h.secret) {
                if let Some(v) = h.value.as_ref().and_then(|v| v.to_str().ok()) {
                    header_value(&mut out, v);
                }
            }
            if let Some(a) = u
                .client
                .proxy
                .as_ref()
                .and_then(|p| p.authorization.as_ref())
            {
                header_value(&mut out, a.expose());
            }
        }
        for url in self
            .state
            .redis
            .iter()
            .chain(std::iter::once(&self.state.database))
        {
            if let Some(p) = secret::url_password(url.expose()) {
                out.push(p.to_string());
            }
        }
        out.retain(|s| s.len() >= crate::logging::MIN_SECRET_LEN);
        out.sort();
        out.dedup();
        out
    }

    /// The one-screen summary printed by `llmproxy check`.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for l in &self.server.listeners {
            let scope = if l.models.is_empty() {
                "all models".to_string()
            } else {
                l.models.join(", ")
            };
            s.push_str(&format!(
                "listener  {:<12} {:<22} {scope}\n",
                l.name, l.listen
            ));
        }
        s.push_str(&format!("admin     {}\n", self.admin.listen));
        for u in &self.upstreams {
            s.push_str(&format!(
                "upstream  {:<12} {:<18} {}\n",
                u.name,
                u.provider.as_str(),
                u.url.raw
            ));
        }
        for m in &self.models {
            let deps: Vec<String> = m
                .deployments
                .iter()
                .map(|d| {
                    let mut x = format!("{}/{} w{}", d.upstream, d.model, d.weight);
                    if let Some(rpm) = d.rpm {
                        x.push_str(&format!(" rpm {rpm}"));
                    }
                    if let Some(tpm) = d.tpm {
                        x.push_str(&format!(" tpm {tpm}"));
                    }
                    x
                })
                .collect();
            let aliases = if m.aliases.is_empty() {
                String::new()
            } else {
                format!(" (aliases: {})", m.aliases.join(", "))
            };
            s.push_str(&format!(
                "model     {}{aliases} [{}]: {}\n",
                m.name,
                m.strategy.as_str(),
                deps.join(", ")
            ));
        }
        for r in &self.routes {
            s.push_str(&format!("route     {}/* -> {}\n", r.prefix, r.upstream));
        }
        match &self.state.redis {
            Some(url) => s.push_str(&format!(
                "state     redis {} (on failure: {})\n",
                secret::redact_url(url.expose()),
                match self.state.redis_failure {
                    state::RedisFailure::Open => "open",
                    state::RedisFailure::Closed => "closed",
                }
            )),
            None => s.push_str("state     in-process (no external services)\n"),
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoEnv;
    impl Env for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
    }

    #[test]
    fn default_config_is_valid() {
        let cfg = parse(DEFAULT_CONFIG, &NoEnv).unwrap();
        assert!(!cfg.models.is_empty());
    }

    #[test]
    fn drop_params_default_is_top_level_and_models_override_it() {
        let text = r#"
server:
  listeners: [{name: main, listen: "127.0.0.1:4000"}]
drop_params: true
upstreams:
  - {name: a, provider: anthropic, url: "http://127.0.0.1:1/v1"}
models:
  - {name: inherits, deployments: [{upstream: a, model: x}]}
  - {name: strict, drop_params: false, deployments: [{upstream: a, model: x}]}
"#;
        let cfg = parse(text, &NoEnv).unwrap();
        assert!(cfg.models[0].drop_params);
        assert!(!cfg.models[1].drop_params);
        let text = text.replace("drop_params: true\n", "");
        let cfg = parse(&text, &NoEnv).unwrap();
        assert!(!cfg.models[0].drop_params);
        let bad = text.replace("drop_params: false", "drop_params: sometimes");
        let all = parse(&bad, &NoEnv).unwrap_err().to_string();
        assert!(all.contains("models[1].drop_params"), "{all}");
    }

    #[test]
    fn reports_every_error_with_path() {
        let text = r#"
server:
  listeners: [{name: main, listen: "127.0.0.1:4000", models: [nope]}]
  max_request_body: 8XB
upstreams:
  - {name: a, url: "http://127.0.0.1:1/v1", auth: {type: bearer, token: "${MISSING_VAR}"}}
models:
  - name: m
    strategy: round_robbin
    deployments: [{upstream: b, model: x}]
    alises: [x]
"#;
        let errs = parse(text, &NoEnv).unwrap_err();
        let all = errs.to_string();
        for needle in [
            "server.listeners[0].models[0]: unknown model `nope`",
            "server.max_request_body: invalid size",
            "upstreams[0].auth.token: environment variable `MISSING_VAR`",
            "models[0].strategy: `round_robbin` is not one of",
            "did you mean `round_robin`",
            "models[0].deployments[0].upstream: unknown upstream `b`",
            "models[0].alises: unknown key (did you mean `aliases`?)",
        ] {
            assert!(all.contains(needle), "missing `{needle}` in:\n{all}");
        }
    }
}
