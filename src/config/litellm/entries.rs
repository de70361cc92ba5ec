//! LiteLLM `model_list` entries, read into native upstreams and models, and the value readers
//! the rest of the translation shares.

use super::*;

impl Tx<'_> {
    pub(super) fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(path, message);
    }

    pub(super) fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(path, message);
    }

    /// A key this section does not support: one warning, with the nearest supported key.
    pub(super) fn unsupported(&mut self, path: &str, key: &str, known: &[&str]) {
        let hint = nearest(key, known)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        self.warn(
            &join(path, key),
            format!("not supported by llmproxy: ignored{hint}"),
        );
    }

    /// A value with `os.environ/NAME` turned into `${NAME}` (recursively).
    pub(super) fn value(&mut self, v: &Value) -> Value {
        match v {
            Value::String(text) => match text.strip_prefix("os.environ/") {
                Some(name) => {
                    self.env_refs.insert(name.to_string());
                    Value::String(format!("${{{name}}}"))
                }
                None => v.clone(),
            },
            Value::Sequence(items) => {
                Value::Sequence(items.iter().map(|i| self.value(i)).collect())
            }
            Value::Mapping(m) => {
                let mut out = Mapping::new();
                for (k, v) in m {
                    out.insert(k.clone(), self.value(v));
                }
                Value::Mapping(out)
            }
            other => other.clone(),
        }
    }

    /// A string value (numbers as their text), `os.environ/NAME` as `${NAME}`; `None` when absent
    /// or empty.
    pub(super) fn text(&mut self, path: &str, v: Option<&Value>) -> Option<String> {
        match v? {
            Value::Null => None,
            Value::String(t) if t.is_empty() => None,
            v @ Value::String(_) => match self.value(v) {
                Value::String(t) => Some(t),
                _ => None,
            },
            Value::Number(n) => Some(n.to_string()),
            other => {
                self.error(path, format!("expected a string, found {}", kind(other)));
                None
            }
        }
    }

    /// A number; `os.environ/NAME` is read now (numbers are not secrets).
    pub(super) fn number(&mut self, path: &str, v: &Value) -> Option<f64> {
        let parsed = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(t) => {
                let t = match t.strip_prefix("os.environ/") {
                    Some(name) => match self.env.var(name) {
                        Some(val) => val,
                        None => {
                            self.error(
                                path,
                                format!("environment variable `{name}` is not set (read by `os.environ/{name}`)"),
                            );
                            return None;
                        }
                    },
                    None => t.clone(),
                };
                t.trim().parse::<f64>().ok()
            }
            _ => None,
        };
        let shown = match v {
            Value::Number(n) => format!("`{n}`"),
            Value::String(t) => format!("`{t}`"),
            other => kind(other).to_string(),
        };
        match parsed {
            Some(n) if n.is_finite() && n >= 0.0 => Some(n),
            Some(_) => {
                self.error(path, format!("must not be negative, found {shown}"));
                None
            }
            None => {
                self.error(path, format!("expected a number, found {shown}"));
                None
            }
        }
    }

    pub(super) fn count(&mut self, path: &str, v: &Value) -> Option<u64> {
        let n = self.number(path, v)?;
        if n.fract() != 0.0 {
            self.error(path, "expected a whole number");
            return None;
        }
        Some(n as u64)
    }

    pub(super) fn seconds(&mut self, path: &str, v: &Value) -> Option<String> {
        let n = self.number(path, v)?;
        if n == 0.0 {
            self.error(path, "must be a positive number of seconds");
            return None;
        }
        Some(duration(n))
    }

    pub(super) fn boolean(&mut self, path: &str, v: &Value) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            Value::String(t) if t.eq_ignore_ascii_case("true") => Some(true),
            Value::String(t) if t.eq_ignore_ascii_case("false") => Some(false),
            other => {
                self.error(
                    path,
                    format!("expected true or false, found {}", kind(other)),
                );
                None
            }
        }
    }

    pub(super) fn document(&mut self, doc: &Value) {
        let Some(root) = doc.as_mapping() else {
            self.error("", "expected a mapping at the top level");
            return;
        };
        for k in root.keys() {
            match k.as_str() {
                Some(key) if TOP_KEYS.contains(&key) => {}
                Some(key) => self.unsupported("", key, TOP_KEYS),
                None => self.error("", "keys must be strings"),
            }
        }
        match root.get("model_list") {
            Some(Value::Sequence(entries)) => {
                if entries.is_empty() {
                    self.error("model_list", "the list must not be empty");
                }
                for (i, e) in entries.iter().enumerate() {
                    self.entry(i, e);
                }
            }
            Some(other) => self.error(
                "model_list",
                format!("expected a list of models, found {}", kind(other)),
            ),
            None => {}
        }
        for section in ["litellm_settings", "llm_settings"] {
            if let Some(v) = root.get(section) {
                self.settings(section, v, SETTINGS_KEYS);
            }
        }
        if let Some(v) = root.get("router_settings") {
            self.settings("router_settings", v, ROUTER_KEYS);
        }
        if let Some(v) = root.get("general_settings") {
            self.general(v);
        }
    }

    /// One `model_list` entry: a deployment of `model_name`.
    pub(super) fn entry(&mut self, i: usize, entry: &Value) {
        let path = format!("model_list[{i}]");
        let Some(m) = entry.as_mapping() else {
            self.error(
                &path,
                format!(
                    "expected a mapping with model_name and litellm_params, found {}",
                    kind(entry)
                ),
            );
            return;
        };
        const ENTRY_KEYS: &[&str] = &[
            "model_name",
            "litellm_params",
            "llm_params",
            "model_info",
            "rpm",
            "tpm",
        ];
        for k in m.keys() {
            match k.as_str() {
                Some("model_info") => self.warn(
                    &join(&path, "model_info"),
                    "informational metadata in LiteLLM; not used by llmproxy: ignored",
                ),
                Some(key) if ENTRY_KEYS.contains(&key) => {}
                Some(key) => self.unsupported(&path, key, ENTRY_KEYS),
                None => self.error(&path, "keys must be strings"),
            }
        }
        let name_path = join(&path, "model_name");
        let name = match m.get("model_name") {
            Some(Value::String(n)) if !n.is_empty() => Some(n.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            None | Some(Value::Null) => {
                self.error(
                    &name_path,
                    "required key is missing: the name clients ask for",
                );
                None
            }
            Some(other) => {
                self.error(
                    &name_path,
                    format!("expected a string, found {}", kind(other)),
                );
                None
            }
        };
        let (key, params) = match (m.get("litellm_params"), m.get("llm_params")) {
            (Some(p), None) => ("litellm_params", p),
            (None, Some(p)) => ("llm_params", p),
            (Some(_), Some(_)) => {
                self.error(&path, "both `litellm_params` and `llm_params`: use one");
                self.mark_broken(name);
                return;
            }
            (None, None) => {
                self.error(
                    &join(&path, "litellm_params"),
                    "required key is missing: the deployment, e.g. {model: openai/gpt-4o}",
                );
                self.mark_broken(name);
                return;
            }
        };
        let params_path = join(&path, key);
        let Some(p) = params.as_mapping() else {
            self.error(
                &params_path,
                format!("expected a mapping, found {}", kind(params)),
            );
            self.mark_broken(name);
            return;
        };
        // Entry-level rpm/tpm (LiteLLM accepts both places); litellm_params wins.
        let mut p = p.clone();
        let mut entry_fields = Vec::new();
        for limit in ["rpm", "tpm"] {
            if let Some(v) = m.get(limit) {
                if !p.contains_key(limit) {
                    p.insert(s(limit), v.clone());
                    entry_fields.push((limit, join(&path, limit)));
                }
            }
        }
        let Some(d) = self.deployment(&params_path, &p, &entry_fields) else {
            self.mark_broken(name);
            return;
        };
        let Some(name) = name else { return };
        let EntryOut {
            deployment,
            drop_params,
            pricing,
        } = d;
        let idx = match self.models.iter().position(|x| x.name == name) {
            Some(idx) => idx,
            None => {
                self.models.push(ModelOut {
                    name: name.clone(),
                    name_path,
                    ..ModelOut::default()
                });
                self.models.len() - 1
            }
        };
        if let Some((dp, dp_path)) = drop_params {
            let prev = self.models[idx].drop_params.clone();
            if prev.as_ref().is_some_and(|(v, _)| *v != dp) {
                self.warn(
                    &dp_path,
                    format!("deployments of `{name}` disagree on drop_params: llmproxy sets it per model, `{dp}` is used"),
                );
            }
            self.models[idx].drop_params = Some((dp, dp_path));
        }
        if let Some((price, price_path)) = pricing {
            match &self.models[idx].pricing {
                Some((first, _)) if *first != price => self.warn(
                    &price_path,
                    format!(
                        "llmproxy prices per model: `{name}` uses the first deployment's costs"
                    ),
                ),
                Some(_) => {}
                None => self.models[idx].pricing = Some((price, price_path)),
            }
        }
        self.models[idx].deployments.push(deployment);
    }

    pub(super) fn mark_broken(&mut self, name: Option<String>) {
        if let Some(n) = name {
            self.broken.insert(n);
        }
    }

    /// `litellm_params` → a native deployment (and its upstream, shared with equal ones).
    pub(super) fn deployment(
        &mut self,
        pp: &str,
        p: &Mapping,
        entry_fields: &[(&str, String)],
    ) -> Option<EntryOut> {
        let model_path = join(pp, "model");
        let model = match p.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            None | Some(Value::Null) => {
                self.error(
                    &model_path,
                    format!(
                        "required key is missing: the provider and model, e.g. `openai/gpt-4o` or `azure/<deployment>` (providers: {})",
                        prefixes()
                    ),
                );
                return None;
            }
            Some(other) => {
                self.error(
                    &model_path,
                    format!("expected a string, found {}", kind(other)),
                );
                return None;
            }
        };
        for k in p.keys() {
            let Some(key) = k.as_str() else {
                self.error(pp, "keys must be strings");
                continue;
            };
            let known = PARAM_KEYS.contains(&key)
                || DEFAULT_PARAMS.contains(&key)
                || TEMPLATE_KEYS.contains(&key)
                || AWS_KEYS.iter().any(|(a, _)| *a == key);
            if !known {
                let mut all: Vec<&str> = PARAM_KEYS.to_vec();
                all.extend_from_slice(DEFAULT_PARAMS);
                self.unsupported(pp, key, &all);
            }
        }
        // `base_url` is a newer LiteLLM spelling of `api_base`.
        let api_base_key = if p.contains_key("base_url") && !p.contains_key("api_base") {
            "base_url"
        } else {
            "api_base"
        };
        let api_base_path = join(pp, api_base_key);
        let api_base = self.text(&api_base_path, p.get(api_base_key));
        let custom = self.text(
            &join(pp, "custom_llm_provider"),
            p.get("custom_llm_provider"),
        );
        let (spec, id) = match self.resolve(&model, custom.as_deref(), api_base.is_some()) {
            Ok(x) => x,
            Err(msg) => {
                let at = if custom.is_some() {
                    join(pp, "custom_llm_provider")
                } else {
                    model_path
                };
                self.error(&at, msg);
                return None;
            }
        };
        let mut up = Mapping::new();
        let mut fields: Vec<(&'static str, String)> = vec![("provider", model_path.clone())];
        // `openai/` with an api_base is any OpenAI-compatible server.
        let native = match (spec.native, &api_base) {
            ("openai", Some(b)) if !b.contains("api.openai.com") => "openai_compatible",
            (n, _) => n,
        };
        up.insert(s("provider"), s(native));
        // url
        let url = match (&api_base, spec) {
            (Some(b), _) => {
                fields.push(("url", api_base_path.clone()));
                Some(
                    if spec.v1_under_root && !b.contains("${") && url_path_is_empty(b) {
                        format!("{}/v1", b.trim_end_matches('/'))
                    } else {
                        b.clone()
                    },
                )
            }
            (
                None,
                ProviderSpec {
                    base_url: Some(u), ..
                },
            ) => Some(u.to_string()),
            (
                None,
                ProviderSpec {
                    base_env: Some(e), ..
                },
            ) => {
                fields.push(("url", api_base_path.clone()));
                Some(format!("${{{e}}}"))
            }
            (None, _) if spec.auth == AuthStyle::Gcp => {
                let project = self
                    .text(&join(pp, "vertex_project"), p.get("vertex_project"))
                    .unwrap_or_else(|| "${VERTEXAI_PROJECT}".into());
                let location = self
                    .text(&join(pp, "vertex_location"), p.get("vertex_location"))
                    .unwrap_or_else(|| "${VERTEXAI_LOCATION:-us-central1}".into());
                fields.push(("url", join(pp, "vertex_project")));
                Some(format!("https://{location}-aiplatform.googleapis.com/v1/projects/{project}/locations/{location}/publishers/google"))
            }
            // bedrock: derived from the region.
            (None, _) if spec.auth == AuthStyle::AwsSigV4 => None,
            (None, _) => {
                self.error(
                    &api_base_path,
                    format!(
                        "required for `{}/` models: the server's base URL",
                        spec.prefix
                    ),
                );
                return None;
            }
        };
        if let Some(u) = url {
            up.insert(s("url"), s(&u));
        }
        // api_version (Azure only)
        let version_path = join(pp, "api_version");
        let version = self.text(&version_path, p.get("api_version"));
        if spec.native == "azure" {
            up.insert(
                s("api_version"),
                s(&version.unwrap_or_else(|| "${AZURE_API_VERSION:-2024-10-21}".into())),
            );
            fields.push(("api_version", version_path));
        } else if version.is_some() {
            self.warn(&version_path, "only used by azure/ models: ignored");
        }
        // auth
        let key_path = join(pp, "api_key");
        let key = self.text(&key_path, p.get("api_key"));
        let ad_token = self.text(&join(pp, "azure_ad_token"), p.get("azure_ad_token"));
        let key_or_env = key
            .clone()
            .or_else(|| spec.key_env.map(|e| format!("${{{e}:-}}")));
        let mut auth = Mapping::new();
        let mut auth_path = key_path.clone();
        match spec.auth {
            _ if spec.native == "azure" && ad_token.is_some() => {
                if key.is_some() {
                    self.warn(&key_path, "azure_ad_token is used: api_key ignored");
                }
                auth_path = join(pp, "azure_ad_token");
                auth.insert(s("type"), s("bearer"));
                auth.insert(s("token"), s(&ad_token.clone().unwrap_or_default()));
            }
            AuthStyle::Bearer => {
                if let Some(k) = key_or_env {
                    auth.insert(s("type"), s("bearer"));
                    auth.insert(s("token"), s(&k));
                }
            }
            AuthStyle::Header(h) => {
                if let Some(k) = key_or_env {
                    auth.insert(s("type"), s("header"));
                    auth.insert(s("name"), s(h));
                    auth.insert(s("value"), s(&k));
                }
            }
            AuthStyle::Optional => {
                if let Some(k) = &key {
                    auth.insert(s("type"), s("bearer"));
                    auth.insert(s("token"), s(k));
                }
            }
            AuthStyle::AwsSigV4 => {
                auth_path = pp.to_string();
                auth.insert(s("type"), s("aws_sigv4"));
                let region = self
                    .text(&join(pp, "aws_region_name"), p.get("aws_region_name"))
                    .unwrap_or_else(|| {
                        // LiteLLM's variable, else the AWS SDKs' (AWS_REGION, then AWS_DEFAULT_REGION);
                        // none set: the error names LiteLLM's.
                        let set = ["AWS_REGION_NAME", "AWS_REGION", "AWS_DEFAULT_REGION"]
                            .into_iter()
                            .find(|v| self.env.var(v).is_some())
                            .unwrap_or("AWS_REGION_NAME");
                        format!("${{{set}}}")
                    });
                auth.insert(s("region"), s(&region));
                for (from, to) in AWS_KEYS {
                    if let Some(v) = self.text(&join(pp, from), p.get(*from)) {
                        auth.insert(s(to), s(&v));
                    }
                }
            }
            AuthStyle::Gcp => {
                auth_path = join(pp, "vertex_credentials");
                auth.insert(s("type"), s("gcp"));
                if let Some(c) = self.text(&auth_path, p.get("vertex_credentials")) {
                    if c.trim_start().starts_with('{') {
                        self.error(
                            &auth_path,
                            "llmproxy reads Google credentials from a file: give the path of the service account JSON file",
                        );
                    }
                    auth.insert(s("credentials_file"), s(&c));
                }
            }
        }
        if auth.is_empty() {
            auth.insert(s("type"), s("none"));
        }
        if key.is_some() && matches!(spec.auth, AuthStyle::AwsSigV4 | AuthStyle::Gcp) {
            self.warn(
                &key_path,
                format!(
                    "`{}/` models authenticate with their own credentials: api_key ignored",
                    spec.prefix
                ),
            );
        }
        up.insert(s("auth"), Value::Mapping(auth));
        fields.push(("auth", auth_path));
        // provider-specific keys used elsewhere
        if spec.auth != AuthStyle::AwsSigV4 {
            for (k, _) in AWS_KEYS.iter().chain([("aws_region_name", "")].iter()) {
                if p.contains_key(*k) {
                    self.warn(&join(pp, k), "only used by bedrock/ models: ignored");
                }
            }
        }
        if spec.auth != AuthStyle::Gcp {
            for k in ["vertex_project", "vertex_location", "vertex_credentials"] {
                if p.contains_key(k) {
                    self.warn(&join(pp, k), "only used by vertex_ai/ models: ignored");
                }
            }
        }
        if ad_token.is_some() && spec.native != "azure" {
            self.warn(
                &join(pp, "azure_ad_token"),
                "only used by azure/ models: ignored",
            );
        }
        // prompt template (huggingface/ raw text generation)
        let mut template = Mapping::new();
        for k in TEMPLATE_KEYS {
            if let Some(v) = p.get(*k) {
                if spec.native == "text_generation" {
                    let v = self.value(v);
                    template.insert(s(k), v);
                } else {
                    self.warn(
                        &join(pp, k),
                        "a prompt template is only used by huggingface/ models: ignored",
                    );
                }
            }
        }
        if !template.is_empty() {
            up.insert(s("prompt_template"), Value::Mapping(template));
            fields.push(("prompt_template", pp.to_string()));
        }
        // per-deployment timeout: the upstream's request timeout
        let timeout_path = join(pp, "timeout");
        if let Some(t) = p
            .get("timeout")
            .and_then(|v| self.seconds(&timeout_path, v))
        {
            let mut client = Mapping::new();
            client.insert(s("request_timeout"), s(&t));
            up.insert(s("client"), Value::Mapping(client));
            fields.push(("client", timeout_path));
        }
        let upstream = self.upstream(spec, up, fields, pp, &model, api_base.as_deref());

        // the deployment
        let mut d = Mapping::new();
        let mut dfields = Vec::new();
        d.insert(s("upstream"), s(&upstream));
        d.insert(s("model"), s(&id));
        let weight = p
            .get("weight")
            .and_then(|v| self.count(&join(pp, "weight"), v));
        if let Some(w) = weight {
            d.insert(s("weight"), Value::from(w));
            dfields.push(("weight".to_string(), join(pp, "weight")));
        }
        let mut rpm = None;
        for limit in ["rpm", "tpm"] {
            let lp = entry_fields
                .iter()
                .find(|(k, _)| *k == limit)
                .map(|(_, p)| p.clone())
                .unwrap_or_else(|| join(pp, limit));
            if let Some(n) = p.get(limit).and_then(|v| self.count(&lp, v)) {
                d.insert(s(limit), Value::from(n));
                dfields.push((limit.to_string(), lp));
                if limit == "rpm" {
                    rpm = Some(n);
                }
            }
        }
        let mut params = Mapping::new();
        for k in DEFAULT_PARAMS {
            if let Some(v) = p.get(*k) {
                if !v.is_null() {
                    let v = self.value(v);
                    params.insert(s(k), v);
                    dfields.push((format!("params.{k}"), join(pp, k)));
                }
            }
        }
        if !params.is_empty() {
            d.insert(s("params"), Value::Mapping(params));
        }
        let mut headers = Mapping::new();
        if let Some(org) = self.text(&join(pp, "organization"), p.get("organization")) {
            headers.insert(s("OpenAI-Organization"), s(&org));
            dfields.push((
                "headers.OpenAI-Organization".into(),
                join(pp, "organization"),
            ));
        }
        match p.get("extra_headers") {
            Some(Value::Mapping(h)) => {
                for (k, v) in h {
                    let name = k.as_str().unwrap_or_default().to_string();
                    let v = match v {
                        Value::Number(n) => s(&n.to_string()),
                        other => self.value(other),
                    };
                    dfields.push((
                        format!("headers.{name}"),
                        join(&join(pp, "extra_headers"), &name),
                    ));
                    headers.insert(k.clone(), v);
                }
            }
            Some(Value::Null) | None => {}
            Some(other) => self.error(
                &join(pp, "extra_headers"),
                format!(
                    "expected a mapping of header names to values, found {}",
                    kind(other)
                ),
            ),
        }
        if !headers.is_empty() {
            d.insert(s("headers"), Value::Mapping(headers));
        }
        let dp_path = join(pp, "drop_params");
        let drop_params = p
            .get("drop_params")
            .and_then(|v| self.boolean(&dp_path, v))
            .map(|b| (b, dp_path));
        let pricing = self.pricing(pp, p);
        Some(EntryOut {
            deployment: DeploymentOut {
                body: d,
                fields: dfields,
                source: pp.to_string(),
                rpm,
                weighted: weight.is_some(),
            },
            drop_params,
            pricing,
        })
    }

    /// `input_cost_per_token` / `output_cost_per_token` (USD per token) → native pricing (per
    /// million tokens).
    pub(super) fn pricing(&mut self, pp: &str, p: &Mapping) -> Option<(Mapping, String)> {
        let input = p.get("input_cost_per_token");
        let output = p.get("output_cost_per_token");
        if input.is_none() && output.is_none() {
            return None;
        }
        let ip = join(pp, "input_cost_per_token");
        let op = join(pp, "output_cost_per_token");
        let i = match input {
            Some(v) => self.number(&ip, v)?,
            None => 0.0,
        };
        let o = match output {
            Some(v) => self.number(&op, v)?,
            None => 0.0,
        };
        let mut m = Mapping::new();
        m.insert(s("input_per_mtok"), Value::from(per_million(i)));
        m.insert(s("output_per_mtok"), Value::from(per_million(o)));
        Some((m, if input.is_some() { ip } else { op }))
    }

    /// Which provider a LiteLLM `model` names, and the model id the provider knows.
    pub(super) fn resolve(
        &self,
        model: &str,
        custom: Option<&str>,
        has_base: bool,
    ) -> Result<(&'static ProviderSpec, String), String> {
        if let Some(c) = custom {
            let spec = provider(c).ok_or_else(|| unknown_provider(c, model))?;
            let id = model
                .strip_prefix(c)
                .and_then(|r| r.strip_prefix('/'))
                .unwrap_or(model);
            return Ok((spec, id.to_string()));
        }
        if let Some((prefix, id)) = model.split_once('/') {
            if let Some(spec) = provider(prefix) {
                if id.is_empty() {
                    return Err(format!("`{model}` names no model after `{prefix}/`"));
                }
                return Ok((spec, id.to_string()));
            }
            if infer_provider(model).is_none() {
                return Err(unknown_provider(prefix, model));
            }
        }
        match infer_provider(model) {
            Some(spec) => Ok((spec, model.to_string())),
            None => Err(format!(
                "cannot tell the provider of `{model}`: write it as `<provider>/{model}`{} (providers: {})",
                if has_base {
                    format!(", e.g. `openai/{model}` for an OpenAI-compatible server")
                } else {
                    String::new()
                },
                prefixes()
            )),
        }
    }

    /// The name of the upstream for these settings: an equal one already made, or a new one.
    pub(super) fn upstream(
        &mut self,
        spec: &ProviderSpec,
        body: Mapping,
        fields: Vec<(&'static str, String)>,
        source: &str,
        model: &str,
        api_base: Option<&str>,
    ) -> String {
        if let Some(u) = self.upstreams.iter().find(|u| u.body == body) {
            return u.name.clone();
        }
        let base = match api_base.and_then(host_label) {
            Some(h) => format!("{}-{h}", spec.prefix),
            None => spec.prefix.to_string(),
        };
        let mut name = base.clone();
        let mut n = 2;
        while self.upstreams.iter().any(|u| u.name == name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        let native_provider = match body.get("provider").and_then(Value::as_str) {
            Some("openai_compatible") => "openai_compatible",
            _ => spec.native,
        };
        self.upstreams.push(UpstreamOut {
            name: name.clone(),
            body,
            fields,
            source: source.to_string(),
            native_provider,
            model: model.to_string(),
        });
        name
    }
}
