//! `litellm_settings` / `router_settings` / `general_settings`: retries, fallbacks, cache, callbacks,
//! the master key and database, then the native document assembled from everything read.

use super::*;

impl Tx<'_> {
    /// `litellm_settings` / `llm_settings` / `router_settings`.
    pub(super) fn settings(&mut self, path: &str, v: &Value, known: &[&str]) {
        let Some(m) = v.as_mapping() else {
            if !v.is_null() {
                self.error(path, format!("expected a mapping, found {}", kind(v)));
            }
            return;
        };
        for (k, v) in m {
            let Some(key) = k.as_str() else {
                self.error(path, "keys must be strings");
                continue;
            };
            let p = join(path, key);
            if !known.contains(&key) {
                self.unsupported(path, key, known);
                continue;
            }
            match key {
                "drop_params" => {
                    if let Some(b) = self.boolean(&p, v) {
                        self.drop_params = Some((b, p));
                    }
                }
                "set_verbose" => {
                    let on = self.boolean(&p, v) == Some(true);
                    if on {
                        self.debug = Some(p);
                    }
                }
                "num_retries" => {
                    if let Some(n) = self.count(&p, v) {
                        if n > 19 {
                            self.error(&p, "at most 19 retries (20 attempts)");
                        } else {
                            self.settings.attempts = Some((n + 1, p));
                        }
                    }
                }
                "request_timeout" | "timeout" => {
                    if let Some(t) = self.seconds(&p, v) {
                        self.settings.timeout = Some((t.clone(), p.clone()));
                        self.upstream_timeout = Some((t, p));
                    }
                }
                "allowed_fails" => {
                    if let Some(n) = self.count(&p, v) {
                        self.settings.allowed_fails = Some((n, p));
                    }
                }
                "cooldown_time" => {
                    if let Some(t) = self.seconds(&p, v) {
                        self.settings.cooldown = Some((t, p));
                    }
                }
                "fallbacks" | "context_window_fallbacks" => self.fallbacks(&p, key, v),
                "default_fallbacks" => {
                    let targets = self.targets(&p, v);
                    self.settings.default_fallbacks.extend(targets);
                }
                "cache" => self.cache(path, &p, v, m.get("cache_params")),
                "cache_params" if !m.contains_key("cache") => {
                    self.warn(&p, "without `cache: true` no response is cached: ignored");
                }
                "success_callback" | "failure_callback" | "callbacks" => self.callbacks(&p, v),
                // llmproxy never sends telemetry anywhere: `telemetry: false` is what it does.
                "telemetry" => {}
                "add_function_to_prompt" => {
                    if let Some(b) = self.boolean(&p, v) {
                        self.settings.add_function_to_prompt = Some((b, p));
                    }
                }
                "routing_strategy" => {
                    let strategy = match v.as_str() {
                        Some("simple-shuffle") => Some("random"),
                        Some("least-busy") => Some("least_busy"),
                        Some(other) => {
                            self.warn(&p, format!("`{other}` is not supported by llmproxy (simple-shuffle, least-busy): the default weighted round robin is used"));
                            None
                        }
                        None => {
                            self.error(&p, format!("expected a string, found {}", kind(v)));
                            None
                        }
                    };
                    if let Some(st) = strategy {
                        self.settings.strategy = Some((st, p));
                    }
                }
                // redis_port and redis_password are read with redis_host.
                "redis_host" | "redis_url" => {
                    if let Some(u) = self.redis_url(path, Some(m)) {
                        self.redis = Some((u, p));
                    }
                }
                _ => {}
            }
        }
    }

    /// `fallbacks: [{"gpt-4": ["gpt-3.5"]}]`.
    pub(super) fn fallbacks(&mut self, path: &str, key: &str, v: &Value) {
        let Some(rules) = v.as_sequence() else {
            if !v.is_null() {
                self.error(
                    path,
                    format!(
                        "expected a list like [{{\"gpt-4\": [\"gpt-3.5-turbo\"]}}], found {}",
                        kind(v)
                    ),
                );
            }
            return;
        };
        for (k, rule) in rules.iter().enumerate() {
            let rp = format!("{path}[{k}]");
            let Some(m) = rule.as_mapping() else {
                self.error(
                    &rp,
                    format!(
                        "expected a mapping like {{\"gpt-4\": [\"gpt-3.5-turbo\"]}}, found {}",
                        kind(rule)
                    ),
                );
                continue;
            };
            for (from, to) in m {
                let Some(from) = from.as_str().map(str::to_string) else {
                    self.error(&rp, "model names must be strings");
                    continue;
                };
                let fp = join(&rp, &from);
                let targets = self.targets(&fp, to);
                if self.broken.contains(&from) {
                    continue;
                }
                let Some(model) = self.models.iter_mut().find(|m| m.name == from) else {
                    let names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
                    let hint = nearest(&from, &names)
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    self.error(
                        &fp,
                        format!("unknown model `{from}`{hint}: not a model_name of model_list"),
                    );
                    continue;
                };
                if key == "fallbacks" {
                    model.fallbacks.extend(targets);
                } else {
                    model.context_window_fallbacks.extend(targets);
                }
            }
        }
    }

    /// A list of model names (or one name), each with its path; models whose entries failed are
    /// left out (their error is already reported).
    pub(super) fn targets(&mut self, path: &str, v: &Value) -> Vec<(String, String)> {
        let items: Vec<(Value, String)> = match v {
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(j, t)| (t.clone(), format!("{path}[{j}]")))
                .collect(),
            Value::String(_) => vec![(v.clone(), path.to_string())],
            other => {
                self.error(
                    path,
                    format!("expected a list of model names, found {}", kind(other)),
                );
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (t, p) in items {
            match t.as_str() {
                Some(name) if self.broken.contains(name) => {}
                Some(name) => out.push((name.to_string(), p)),
                None => self.error(&p, format!("expected a model name, found {}", kind(&t))),
            }
        }
        out
    }

    /// `cache: true` (with `cache_params`), or the older `cache: {type: redis}`.
    pub(super) fn cache(&mut self, section: &str, path: &str, v: &Value, params: Option<&Value>) {
        let params_path = join(section, "cache_params");
        let (on, params, params_path) = match v {
            Value::Bool(b) => (*b, params, params_path),
            Value::Mapping(_) => (true, Some(v), path.to_string()),
            Value::Null => (false, None, params_path),
            other => {
                self.error(
                    path,
                    format!("expected true, false or a mapping, found {}", kind(other)),
                );
                return;
            }
        };
        if !on {
            return;
        }
        let empty = Mapping::new();
        let pm = match params {
            Some(Value::Mapping(m)) => m,
            Some(Value::Null) | None => &empty,
            Some(other) => {
                self.error(
                    &params_path,
                    format!("expected a mapping, found {}", kind(other)),
                );
                return;
            }
        };
        const KEYS: &[&str] = &["type", "host", "port", "password", "url", "ttl"];
        for k in pm.keys().filter_map(Value::as_str) {
            if !KEYS.contains(&k) {
                self.unsupported(&params_path, k, KEYS);
            }
        }
        let redis_known = pm.contains_key("host")
            || pm.contains_key("url")
            || self.env.var("REDIS_HOST").is_some()
            || self.env.var("REDIS_URL").is_some();
        let kind = match pm.get("type").and_then(Value::as_str) {
            Some("redis") => "redis",
            Some("local") => "local",
            Some(other) => {
                self.warn(
                    &join(&params_path, "type"),
                    format!("cache type `{other}` is not supported by llmproxy (local, redis): responses are not cached"),
                );
                return;
            }
            None if redis_known => "redis",
            None => {
                self.warn(path, "no Redis is configured (REDIS_HOST or cache_params.host): responses are cached in this process's memory");
                "local"
            }
        };
        let ttl_path = join(&params_path, "ttl");
        let ttl = pm.get("ttl").and_then(|v| self.seconds(&ttl_path, v));
        let redis = kind == "redis";
        if redis {
            match self.redis_url(&params_path, Some(pm)) {
                Some(u) => self.redis = Some((u, path.to_string())),
                None => {
                    self.error(path, "a redis cache needs REDIS_HOST (and REDIS_PORT, REDIS_PASSWORD) in the environment or environment_variables, or cache_params.host");
                    return;
                }
            }
        }
        self.cache = Some(CacheOut {
            redis,
            ttl,
            path: path.to_string(),
        });
    }

    /// `redis://[:password@]host:port/0` from `host`/`port`/`password` (or `url`) in `params`,
    /// else `REDIS_HOST`/`REDIS_PORT`/`REDIS_PASSWORD` (or `REDIS_URL`) as references.
    pub(super) fn redis_url(&mut self, path: &str, params: Option<&Mapping>) -> Option<String> {
        let get = |k: &str| {
            params.and_then(|m| m.get(k).or_else(|| m.get(format!("redis_{k}").as_str())))
        };
        let (url_v, host_v, port_v, pw_v) = (get("url"), get("host"), get("port"), get("password"));
        if let Some(u) = self.text(&join(path, "url"), url_v) {
            return Some(u);
        }
        let host = match self.text(&join(path, "host"), host_v) {
            Some(h) => h,
            None if self.env.var("REDIS_HOST").is_some() => "${REDIS_HOST}".into(),
            None if self.env.var("REDIS_URL").is_some() => return Some("${REDIS_URL}".into()),
            None => return None,
        };
        let port = match self.text(&join(path, "port"), port_v) {
            Some(p) => p,
            None if self.env.var("REDIS_PORT").is_some_and(|v| !v.is_empty()) => {
                "${REDIS_PORT}".into()
            }
            None => "6379".into(),
        };
        let password = match self.text(&join(path, "password"), pw_v) {
            Some(p) => Some(p),
            None if self
                .env
                .var("REDIS_PASSWORD")
                .is_some_and(|v| !v.is_empty()) =>
            {
                Some("${REDIS_PASSWORD}".into())
            }
            None => None,
        };
        Some(match password {
            Some(pw) => format!("redis://:{pw}@{host}:{port}/0"),
            None => format!("redis://{host}:{port}/0"),
        })
    }

    /// `success_callback: ["langfuse", "otel"]` → the native `tracing` section.
    pub(super) fn callbacks(&mut self, path: &str, v: &Value) {
        let items: Vec<(String, String)> = match v {
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .filter_map(|(j, i)| i.as_str().map(|s| (s.to_string(), format!("{path}[{j}]"))))
                .collect(),
            Value::String(c) => vec![(c.clone(), path.to_string())],
            Value::Null => Vec::new(),
            other => {
                self.error(
                    path,
                    format!("expected a list of callback names, found {}", kind(other)),
                );
                return;
            }
        };
        for (name, p) in items {
            match name.as_str() {
                "otel" | "opentelemetry" => self.otel = Some(p),
                "langfuse" => self.langfuse = Some(p),
                other => self.warn(
                    &p,
                    format!(
                        "callback `{other}` is not supported by llmproxy (otel, langfuse): ignored"
                    ),
                ),
            }
        }
    }

    /// `general_settings`.
    pub(super) fn general(&mut self, v: &Value) {
        let path = "general_settings";
        let Some(m) = v.as_mapping() else {
            if !v.is_null() {
                self.error(path, format!("expected a mapping, found {}", kind(v)));
            }
            return;
        };
        for (k, v) in m {
            let Some(key) = k.as_str() else {
                self.error(path, "keys must be strings");
                continue;
            };
            let p = join(path, key);
            match key {
                "master_key" => {
                    if let Some(t) = self.text(&p, Some(v)) {
                        self.master_key = Some((s(&t), p));
                    }
                }
                "database_url" => {
                    if let Some(t) = self.text(&p, Some(v)) {
                        self.database = Some((s(&t), p));
                    }
                }
                "otel" => {
                    if self.boolean(&p, v) == Some(true) {
                        self.otel = Some(p);
                    }
                }
                "health_check_interval" => {
                    if let Some(t) = self.seconds(&p, v) {
                        if self.health_interval.is_none() {
                            self.health_interval = Some((t, p));
                        }
                    }
                }
                "background_health_checks" => {
                    if self.boolean(&p, v) == Some(false) {
                        self.health_interval = Some(("0s".into(), p));
                    }
                }
                other => self.unsupported(path, other, GENERAL_KEYS),
            }
        }
    }

    /// The native document, the native → LiteLLM path map and each upstream's source.
    pub(super) fn assemble(&mut self) -> Assembled {
        let mut paths: Vec<(String, String)> = Vec::new();
        let mut doc = Mapping::new();

        let mut listener = Mapping::new();
        listener.insert(s("name"), s("main"));
        listener.insert(s("listen"), s("0.0.0.0:4000"));
        let mut server = Mapping::new();
        server.insert(
            s("listeners"),
            Value::Sequence(vec![Value::Mapping(listener)]),
        );
        if let Some((k, p)) = self.master_key.take() {
            server.insert(s("master_key"), k);
            paths.push(("server.master_key".into(), p));
        }
        doc.insert(s("server"), Value::Mapping(server));
        let mut admin = Mapping::new();
        admin.insert(s("listen"), s("127.0.0.1:9000"));
        doc.insert(s("admin"), Value::Mapping(admin));

        let mut state = Mapping::new();
        if let Some((u, p)) = self.redis.take() {
            state.insert(s("redis"), s(&u));
            paths.push(("state.redis".into(), p));
        }
        if let Some((d, p)) = self.database.take() {
            state.insert(s("database"), d);
            paths.push(("state.database".into(), p));
        }
        if !state.is_empty() {
            doc.insert(s("state"), Value::Mapping(state));
        }

        let mut upstreams = Vec::new();
        let mut sources = Vec::new();
        for (k, u) in self.upstreams.iter().enumerate() {
            let mut m = Mapping::new();
            m.insert(s("name"), s(&u.name));
            for (key, v) in &u.body {
                m.insert(key.clone(), v.clone());
            }
            if let Some((t, p)) = &self.upstream_timeout {
                if !m.contains_key("client") {
                    let mut client = Mapping::new();
                    client.insert(s("request_timeout"), s(t));
                    m.insert(s("client"), Value::Mapping(client));
                    paths.push((format!("upstreams[{k}].client"), p.clone()));
                }
            }
            if let Some((t, p)) = &self.health_interval {
                let mut hc = Mapping::new();
                hc.insert(s("interval"), s(t));
                m.insert(s("health_check"), Value::Mapping(hc));
                paths.push((format!("upstreams[{k}].health_check"), p.clone()));
            }
            paths.push((format!("upstreams[{k}]"), u.source.clone()));
            for (field, p) in &u.fields {
                paths.push((format!("upstreams[{k}].{field}"), p.clone()));
            }
            sources.push((u.native_provider, u.model.clone(), u.name.clone()));
            upstreams.push(Value::Mapping(m));
        }
        if !upstreams.is_empty() {
            doc.insert(s("upstreams"), Value::Sequence(upstreams));
        }

        let st = &self.settings;
        let mut models = Vec::new();
        for (i, model) in self.models.iter().enumerate() {
            let mp = format!("models[{i}]");
            let mut m = Mapping::new();
            m.insert(s("name"), s(&model.name));
            paths.push((mp.clone(), model.name_path.clone()));
            if let Some((strategy, p)) = &st.strategy {
                m.insert(s("strategy"), s(strategy));
                paths.push((format!("{mp}.strategy"), p.clone()));
            }
            // LiteLLM's simple-shuffle weighs deployments by rpm when none has a weight.
            let rpm_weights = if model.deployments.len() > 1
                && model
                    .deployments
                    .iter()
                    .all(|d| !d.weighted && d.rpm.is_some())
            {
                rpm_weights(
                    &model
                        .deployments
                        .iter()
                        .filter_map(|d| d.rpm)
                        .collect::<Vec<_>>(),
                )
            } else {
                Vec::new()
            };
            let mut deployments = Vec::new();
            for (j, d) in model.deployments.iter().enumerate() {
                let dp = format!("{mp}.deployments[{j}]");
                let mut body = d.body.clone();
                if let Some(w) = rpm_weights.get(j) {
                    body.insert(s("weight"), Value::from(*w));
                }
                paths.push((dp.clone(), d.source.clone()));
                for (field, p) in &d.fields {
                    paths.push((format!("{dp}.{field}"), p.clone()));
                }
                deployments.push(Value::Mapping(body));
            }
            m.insert(s("deployments"), Value::Sequence(deployments));
            if let Some((n, p)) = &st.attempts {
                let mut retry = Mapping::new();
                retry.insert(s("attempts"), Value::from(*n));
                m.insert(s("retry"), Value::Mapping(retry));
                paths.push((format!("{mp}.retry"), p.clone()));
            }
            if st.allowed_fails.is_some() || st.cooldown.is_some() {
                let mut c = Mapping::new();
                if let Some((n, p)) = &st.allowed_fails {
                    // LiteLLM cools a deployment down when it fails *more than* allowed_fails
                    // times a minute; llmproxy's allowed_fails is the failure that triggers it.
                    c.insert(s("allowed_fails"), Value::from(n + 1));
                    c.insert(s("window"), s("60s"));
                    paths.push((format!("{mp}.cooldown.allowed_fails"), p.clone()));
                    paths.push((format!("{mp}.cooldown.window"), p.clone()));
                }
                if let Some((t, p)) = &st.cooldown {
                    c.insert(s("duration"), s(t));
                    paths.push((format!("{mp}.cooldown.duration"), p.clone()));
                }
                m.insert(s("cooldown"), Value::Mapping(c));
            }
            let mut fallbacks = model.fallbacks.clone();
            for (t, p) in &st.default_fallbacks {
                if *t != model.name && !fallbacks.iter().any(|(f, _)| f == t) {
                    fallbacks.push((t.clone(), p.clone()));
                }
            }
            for (key, list) in [
                ("fallbacks", &fallbacks),
                ("context_window_fallbacks", &model.context_window_fallbacks),
            ] {
                if list.is_empty() {
                    continue;
                }
                let mut seq = Vec::new();
                for (j, (t, p)) in list.iter().enumerate() {
                    seq.push(s(t));
                    paths.push((format!("{mp}.{key}[{j}]"), p.clone()));
                }
                paths.push((format!("{mp}.{key}"), list[0].1.clone()));
                m.insert(s(key), Value::Sequence(seq));
            }
            if let Some((t, p)) = &st.timeout {
                m.insert(s("timeout"), s(t));
                paths.push((format!("{mp}.timeout"), p.clone()));
            }
            if let Some(c) = &self.cache {
                let mut mc = Mapping::new();
                mc.insert(s("enabled"), Value::Bool(true));
                // LiteLLM caches every request (the key includes temperature), not only
                // deterministic ones.
                mc.insert(s("only_deterministic"), Value::Bool(false));
                if let Some(t) = &c.ttl {
                    mc.insert(s("ttl"), s(t));
                }
                m.insert(s("cache"), Value::Mapping(mc));
                paths.push((format!("{mp}.cache"), c.path.clone()));
            }
            if let Some((price, p)) = &model.pricing {
                m.insert(s("pricing"), Value::Mapping(price.clone()));
                paths.push((format!("{mp}.pricing"), p.clone()));
            }
            if let Some((b, p)) = &model.drop_params {
                m.insert(s("drop_params"), Value::Bool(*b));
                paths.push((format!("{mp}.drop_params"), p.clone()));
            }
            if let Some((b, p)) = &st.add_function_to_prompt {
                m.insert(s("add_function_to_prompt"), Value::Bool(*b));
                paths.push((format!("{mp}.add_function_to_prompt"), p.clone()));
            }
            models.push(Value::Mapping(m));
        }
        if !models.is_empty() {
            doc.insert(s("models"), Value::Sequence(models));
        }

        if let Some(c) = &self.cache {
            if c.redis {
                let mut cache = Mapping::new();
                cache.insert(s("backend"), s("redis"));
                doc.insert(s("cache"), Value::Mapping(cache));
                paths.push(("cache".into(), c.path.clone()));
            }
        }
        if let Some(p) = self.debug.take() {
            let mut logging = Mapping::new();
            logging.insert(s("level"), s("debug"));
            doc.insert(s("logging"), Value::Mapping(logging));
            paths.push(("logging".into(), p));
        }
        let mut tracing = Mapping::new();
        if let Some(p) = self.otel.take() {
            tracing.insert(s("otlp_endpoint"), s(&self.otlp_endpoint()));
            paths.push(("tracing.otlp_endpoint".into(), p));
        }
        if let Some(p) = self.langfuse.take() {
            let mut lf = Mapping::new();
            lf.insert(s("host"), s("${LANGFUSE_HOST:-https://cloud.langfuse.com}"));
            lf.insert(s("public_key"), s("${LANGFUSE_PUBLIC_KEY}"));
            lf.insert(s("secret_key"), s("${LANGFUSE_SECRET_KEY}"));
            tracing.insert(s("langfuse"), Value::Mapping(lf));
            paths.push(("tracing.langfuse".into(), p));
        }
        if !tracing.is_empty() {
            doc.insert(s("tracing"), Value::Mapping(tracing));
        }
        if let Some((b, p)) = self.drop_params.take() {
            doc.insert(s("drop_params"), Value::Bool(b));
            paths.push(("drop_params".into(), p));
        }
        Assembled {
            native: Value::Mapping(doc),
            paths,
            sources,
        }
    }

    /// Where OpenTelemetry spans go: the standard OTLP variables (the traces endpoint, or the
    /// base endpoint + `/v1/traces`), LiteLLM's `OTEL_ENDPOINT` when it is an HTTP URL, else a
    /// collector on this host.
    pub(super) fn otlp_endpoint(&self) -> String {
        if self.env.var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some() {
            return "${OTEL_EXPORTER_OTLP_TRACES_ENDPOINT}".into();
        }
        for name in ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_ENDPOINT"] {
            if let Some(v) = self.env.var(name).filter(|v| v.starts_with("http")) {
                return if v.trim_end_matches('/').ends_with("/v1/traces") {
                    format!("${{{name}}}")
                } else if v.ends_with('/') {
                    format!("${{{name}}}v1/traces")
                } else {
                    format!("${{{name}}}/v1/traces")
                };
            }
        }
        "http://127.0.0.1:4318/v1/traces".into()
    }
}
