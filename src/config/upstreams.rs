//! `upstreams:` — provider accounts: URL, auth, header operations, client settings, health checks.

use super::reader::{Node, Reader};
use super::secret::Secret;
use base64::Engine;
use std::path::PathBuf;
use std::time::Duration;

/// An upstream's place in [`super::Config::upstreams`], resolved from its name when the config is
/// read (`check` refuses unknown names), so the request path never looks a name up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpstreamId(usize);

impl UpstreamId {
    /// Before resolution (only while the config is being read).
    pub(crate) const UNRESOLVED: UpstreamId = UpstreamId(usize::MAX);

    pub(crate) fn new(index: usize) -> UpstreamId {
        UpstreamId(index)
    }

    /// The index into `Config::upstreams` (and `State::upstreams`, built in the same order).
    pub fn index(self) -> usize {
        self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    OpenAi,
    OpenAiCompatible,
    /// Azure OpenAI: deployment paths with `?api-version=` (see `providers::azure`).
    Azure,
    /// Anthropic Messages API: OpenAI chat requests are translated (see `providers::anthropic`).
    Anthropic,
    /// Google's Gemini API: OpenAI requests translated to `generateContent` (see `providers::gemini`).
    Gemini,
    /// Vertex AI: Gemini's wire format on the publisher path, OAuth2 access tokens.
    Vertex,
    /// A raw text-generation server (HF TGI `/generate`): chat rendered with a prompt template.
    TextGeneration,
    /// AWS Bedrock Runtime: Converse / ConverseStream / InvokeModel, SigV4 (see `providers::bedrock`).
    Bedrock,
}

impl Provider {
    pub fn as_str(&self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::OpenAiCompatible => "openai_compatible",
            Provider::Azure => "azure",
            Provider::Anthropic => "anthropic",
            Provider::Gemini => "gemini",
            Provider::Vertex => "vertex",
            Provider::TextGeneration => "text_generation",
            Provider::Bedrock => "bedrock",
        }
    }
}

/// A parsed upstream base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash, e.g. `/v1` (may be empty).
    pub base_path: String,
    /// The value of the `Host` header: `host` or `host:port` when the port is not the default.
    pub authority: String,
    /// As written in the config (never contains secrets: credentials in URLs are rejected).
    pub raw: String,
}

/// How the gateway authenticates to the upstream; the client's own key never goes there.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    None,
    /// A ready-made header (`Authorization: Bearer ...`, `Authorization: Basic ...`, or a custom one).
    Header {
        name: http::HeaderName,
        value: Secret,
    },
    /// Google OAuth2 access tokens (`type: gcp`), fetched and refreshed by `balance::gcp`: from a
    /// service-account key file, else `GOOGLE_APPLICATION_CREDENTIALS`, else the metadata server.
    Gcp {
        credentials_file: Option<PathBuf>,
    },
    /// AWS Signature Version 4 on every request (`type: aws_sigv4`), made by `balance::sigv4`.
    AwsSigV4(AwsAuth),
}

/// `auth: {type: aws_sigv4, region, access_key_id, secret_access_key, session_token, profile}`.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsAuth {
    /// The signing region (and, without `url`, the endpoint's).
    pub region: String,
    /// Static keys; `None`: the standard AWS credential chain.
    pub keys: Option<AwsKeys>,
    /// The shared config/credentials profile the chain reads (`None`: `AWS_PROFILE`, else `default`).
    pub profile: Option<String>,
}

/// Static AWS credentials from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsKeys {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderOpKind {
    /// Set only when the request does not carry the header.
    Insert,
    /// Set, overwriting.
    Replace,
    Remove,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeaderOp {
    pub op: HeaderOpKind,
    pub key: http::HeaderName,
    pub value: Option<http::HeaderValue>,
    /// The value is a credential (`secret: true`, or a name like `*key*`, `*token*`, `*secret*`,
    /// `authorization`): redacted in `/config` and masked in every log line.
    pub secret: bool,
}

/// An outbound HTTP proxy reached with `CONNECT`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundProxy {
    pub host: String,
    pub port: u16,
    /// `Proxy-Authorization: Basic ...` when the URL carries credentials.
    pub authorization: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    /// From sending the request to the first response body byte.
    pub first_byte_timeout: Duration,
    /// Longest silence between two response chunks.
    pub stream_idle_timeout: Duration,
    /// Whole request, first byte sent to last byte received.
    pub request_timeout: Duration,
    /// How long a pooled upstream connection may sit idle.
    pub idle_timeout: Duration,
    /// TCP keepalive idle time; `None` disables.
    pub tcp_keepalive: Option<Duration>,
    /// Replaces the client's `User-Agent` when set.
    pub user_agent: Option<String>,
    pub proxy: Option<OutboundProxy>,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(300),
            stream_idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(60),
            tcp_keepalive: Some(Duration::from_secs(60)),
            user_agent: None,
            proxy: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    /// `None`: active checks disabled.
    pub interval: Option<Duration>,
    /// Appended to the URL's base path: `/models` probes `{url}/models`.
    pub path: String,
    pub timeout: Duration,
    pub unhealthy_after: usize,
    pub healthy_after: usize,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            interval: Some(Duration::from_secs(15)),
            path: "/models".into(),
            timeout: Duration::from_secs(5),
            unhealthy_after: 2,
            healthy_after: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: String,
    pub provider: Provider,
    pub url: UpstreamUrl,
    /// Azure's `api-version` query value (required for `provider: azure`, refused otherwise).
    pub api_version: Option<String>,
    pub auth: Auth,
    pub headers: Vec<HeaderOp>,
    pub client: ClientSettings,
    pub health_check: HealthCheckConfig,
    /// Account-wide limits shared by all deployments on this upstream.
    pub limits: Limits,
    /// `provider: text_generation`: how chat messages become one prompt (`None` elsewhere).
    pub prompt_template: Option<super::template::PromptTemplate>,
}

/// Per-minute request and token limits (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
}

pub fn read_limits(r: &mut Reader, n: Node) -> Option<Limits> {
    let m = n.map(r, &["rpm", "tpm"])?;
    Some(Limits {
        rpm: super::models::per_minute(r, &m, "rpm"),
        tpm: super::models::per_minute(r, &m, "tpm"),
    })
}

pub fn read(r: &mut Reader, node: Node) -> Option<Upstream> {
    let m = node.map(
        r,
        &[
            "name",
            "provider",
            "url",
            "api_version",
            "auth",
            "headers",
            "limits",
            "client",
            "health_check",
            "prompt_template",
        ],
    )?;
    let name = m.required(r, "name", |r, n| n.string(r));
    let provider = m
        .with(r, "provider", |r, n| {
            n.choice(
                r,
                &[
                    ("openai", Provider::OpenAi),
                    ("openai_compatible", Provider::OpenAiCompatible),
                    ("azure", Provider::Azure),
                    ("anthropic", Provider::Anthropic),
                    ("gemini", Provider::Gemini),
                    ("vertex", Provider::Vertex),
                    ("text_generation", Provider::TextGeneration),
                    ("bedrock", Provider::Bedrock),
                ],
            )
        })
        .unwrap_or(Provider::OpenAiCompatible);
    // Bedrock's URL follows from the region when it is not given.
    let url = if provider == Provider::Bedrock && !m.has("url") {
        None
    } else {
        m.required(r, "url", read_url)
    };
    let api_version = read_api_version(r, &m, provider);
    if provider == Provider::Azure {
        if let Some(u) = &url {
            let lower = u.base_path.to_ascii_lowercase();
            if lower.ends_with("/openai")
                || lower.ends_with("/openai/v1")
                || lower.contains("/deployments")
            {
                r.error(
                    &format!("{}.url", m.path()),
                    "for provider `azure` the URL is the resource endpoint (e.g. https://NAME.openai.azure.com); the gateway adds /openai/deployments/{deployment}/... itself",
                );
            }
        }
    }
    if let (Provider::Vertex, Some(u)) = (provider, &url) {
        if !u.base_path.contains("/projects/") || !u.base_path.contains("/publishers/") {
            r.error(
                &format!("{}.url", m.path()),
                "for provider `vertex` the URL is the publisher path with project and region, e.g. https://us-central1-aiplatform.googleapis.com/v1/projects/PROJECT/locations/us-central1/publishers/google",
            );
        }
    }
    let auth = m
        .with(r, "auth", |r, n| read_auth(r, n, provider))
        .unwrap_or(Auth::None);
    check_provider_auth(r, &m, provider, &auth);
    let prompt_template = super::template::read_for(r, &m, provider);
    let url = match (provider, url, &auth) {
        (Provider::Bedrock, None, Auth::AwsSigV4(a)) => parse_url(&format!(
            "https://bedrock-runtime.{}.amazonaws.com",
            a.region
        ))
        .ok(),
        (Provider::Bedrock, None, _) => {
            if m.has("auth") {
                r.error(
                    &format!("{}.url", m.path()),
                    "required for provider `bedrock` unless `auth` is `aws_sigv4` with a `region` (the URL is then https://bedrock-runtime.REGION.amazonaws.com)",
                );
            } else {
                r.error(
                    &format!("{}.auth", m.path()),
                    "required for provider `bedrock`: `{type: aws_sigv4, region: us-east-1}` (keys, or none for the standard AWS credential chain), or `{type: bearer, token: ...}` (a Bedrock API key, with `url`)",
                );
            }
            None
        }
        (_, url, _) => url,
    };
    let headers = m
        .with(r, "headers", |r, n| Some(n.list(r, read_header_op)))
        .unwrap_or_default();
    let client = m.with(r, "client", read_client).unwrap_or_default();
    let default_health = HealthCheckConfig {
        path: default_health_path(provider).to_string(),
        // Bedrock: passive by default (cooldowns after failures); its probe, when an interval is set,
        // is a signed GET that spends no tokens (see `providers::bedrock`). Vertex AI has no cheap
        // authenticated GET below the publisher path: no active probe unless one is configured.
        interval: match provider {
            Provider::Bedrock | Provider::Vertex => None,
            _ => HealthCheckConfig::default().interval,
        },
        ..HealthCheckConfig::default()
    };
    let health_check = m
        .with(r, "health_check", |r, n| read_health(r, n, &default_health))
        .unwrap_or(default_health);
    let limits = m.with(r, "limits", read_limits).unwrap_or_default();
    Some(Upstream {
        name: name?,
        provider,
        url: url?,
        api_version,
        auth,
        headers,
        client,
        health_check,
        limits,
        prompt_template,
    })
}

/// Providers that cannot work without credentials say so at `check` (an empty value from an unset
/// environment variable is let through: the example configs must check with no keys set).
fn check_provider_auth(r: &mut Reader, m: &super::reader::Map, provider: Provider, auth: &Auth) {
    let path = format!("{}.auth", m.path());
    let declared_none = !m.has("auth") || (*auth == Auth::None && auth_type_is_none(m));
    match provider {
        Provider::Gemini if declared_none => r.error(
            &path,
            "required for provider `gemini`: the API key, e.g. { type: header, name: x-goog-api-key, value: \"${GEMINI_API_KEY}\" }",
        ),
        Provider::Vertex if declared_none => r.error(
            &path,
            "required for provider `vertex`: { type: gcp, credentials_file: /path/to/service-account.json } (an empty credentials_file uses GOOGLE_APPLICATION_CREDENTIALS, then the metadata server)",
        ),
        _ => {}
    }
}

/// Whether `auth.type` is written as `none`.
fn auth_type_is_none(m: &super::reader::Map) -> bool {
    m.raw("auth")
        .and_then(|a| a.get("type"))
        .and_then(|t| t.as_str())
        == Some("none")
}

/// The health-check path when `health_check.path` is not set: OpenAI's `GET /models`; Azure's
/// data-plane `GET /openai/models` (its `?api-version=` is added by `providers::health_path`).
pub fn default_health_path(provider: Provider) -> &'static str {
    match provider {
        Provider::Azure => "/openai/models",
        // TGI's `GET /health`.
        Provider::TextGeneration => "/health",
        // Anthropic's `GET /v1/models` (the URL carries the `/v1`, as OpenAI's does); Gemini's
        // `GET /v1beta/models`; Vertex's is off by default (see `read`).
        Provider::OpenAi
        | Provider::OpenAiCompatible
        | Provider::Anthropic
        | Provider::Gemini
        | Provider::Vertex => "/models",
        // ListAsyncInvokes, the runtime endpoint's one cheap GET (no tokens, one result).
        Provider::Bedrock => "/async-invoke?maxResults=1",
    }
}

/// `api_version`: required for `provider: azure` (e.g. `"2024-10-21"`), meaningless elsewhere.
fn read_api_version(r: &mut Reader, m: &super::reader::Map, provider: Provider) -> Option<String> {
    let path = format!("{}.api_version", m.path());
    let v = m.with(r, "api_version", |r, n| n.string(r));
    match (provider, v) {
        (Provider::Azure, None) => {
            r.error(
                &path,
                "required for provider `azure`: the `api-version` Azure OpenAI expects, e.g. \"2024-10-21\"",
            );
            None
        }
        (Provider::Azure, Some(v)) => {
            let ok = !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            if !ok {
                r.error(
                    &path,
                    format!("`{v}` is not an API version (letters, digits, `-`, `.`, `_`; e.g. \"2024-10-21\")"),
                );
                return None;
            }
            Some(v)
        }
        (_, Some(_)) => {
            r.error(&path, "only used by provider `azure`");
            None
        }
        (_, None) => None,
    }
}

pub fn parse_url(s: &str) -> Result<UpstreamUrl, String> {
    let uri: http::Uri = s
        .parse()
        .map_err(|e| format!("`{s}` is not a valid URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(format!(
                "`{s}`: the URL must start with http:// or https://"
            ))
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("`{s}`: the URL has no host"))?;
    if authority.as_str().contains('@') {
        // Do not echo the URL: it carries a credential.
        return Err("credentials in the URL are not allowed; use `auth`".to_string());
    }
    if uri.query().is_some() {
        return Err(format!("`{s}`: the URL must not have a query string"));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let default_port = if tls { 443 } else { 80 };
    let port = authority.port_u16().unwrap_or(default_port);
    let host_header = if port == default_port {
        authority.host().to_string()
    } else {
        format!("{}:{port}", authority.host())
    };
    Ok(UpstreamUrl {
        tls,
        host,
        port,
        base_path: uri.path().trim_end_matches('/').to_string(),
        authority: host_header,
        raw: s.to_string(),
    })
}

fn read_url(r: &mut Reader, n: Node) -> Option<UpstreamUrl> {
    let s = n.string(r)?;
    if s.is_empty() {
        r.error(
            n.path,
            "the URL is empty (is its environment variable set?)",
        );
        return None;
    }
    parse_url(&s).map_err(|e| r.error(n.path, e)).ok()
}

fn header_name(r: &mut Reader, path: &str, s: &str) -> Option<http::HeaderName> {
    http::HeaderName::from_bytes(s.as_bytes())
        .map_err(|_| r.error(path, format!("`{s}` is not a valid header name")))
        .ok()
}

fn secret_header_value(r: &mut Reader, path: &str, s: String) -> Option<Secret> {
    if http::HeaderValue::from_str(&s).is_err() {
        r.error(
            path,
            "the value contains characters not allowed in an HTTP header",
        );
        return None;
    }
    Some(Secret::new(s))
}

fn read_auth(r: &mut Reader, n: Node, provider: Provider) -> Option<Auth> {
    let m = n.map(
        r,
        &[
            "type",
            "token",
            "username",
            "password",
            "name",
            "value",
            "credentials_file",
            "region",
            "access_key_id",
            "secret_access_key",
            "session_token",
            "profile",
        ],
    )?;
    #[derive(Clone, Copy, PartialEq)]
    enum T {
        None,
        Bearer,
        Basic,
        Header,
        Gcp,
        AwsSigV4,
    }
    let t = m.required(r, "type", |r, n| {
        n.choice(
            r,
            &[
                ("none", T::None),
                ("bearer", T::Bearer),
                ("basic", T::Basic),
                ("header", T::Header),
                ("gcp", T::Gcp),
                ("aws_sigv4", T::AwsSigV4),
            ],
        )
    })?;
    let path = m.path().to_string();
    match (provider, t) {
        (Provider::Bedrock, T::AwsSigV4 | T::Bearer) => {}
        (Provider::Bedrock, _) => {
            r.error(
                &format!("{path}.type"),
                "provider `bedrock` signs its requests: `aws_sigv4` (AWS credentials), or `bearer` (a Bedrock API key)",
            );
            return None;
        }
        (_, T::AwsSigV4) => {
            r.error(
                &format!("{path}.type"),
                "`aws_sigv4` signs requests for provider `bedrock` only",
            );
            return None;
        }
        _ => {}
    }
    if t != T::AwsSigV4 {
        for key in [
            "region",
            "access_key_id",
            "secret_access_key",
            "session_token",
            "profile",
        ] {
            if m.has(key) {
                r.error(&format!("{path}.{key}"), "only used by `type: aws_sigv4`");
            }
        }
    }
    match t {
        T::AwsSigV4 => read_aws_auth(r, &m).map(Auth::AwsSigV4),
        T::None => Some(Auth::None),
        T::Bearer => {
            let token = m.required(r, "token", |r, n| n.string(r))?;
            // An empty token (`${OPENAI_API_KEY:-}` with the variable unset) sends no auth; the
            // upstream's health check then reports it unhealthy, which is what an operator expects.
            if token.is_empty() {
                return Some(Auth::None);
            }
            let value =
                secret_header_value(r, &format!("{path}.token"), format!("Bearer {token}"))?;
            Some(Auth::Header {
                name: http::header::AUTHORIZATION,
                value,
            })
        }
        T::Basic => {
            let user = m.required(r, "username", |r, n| n.string(r))?;
            let pass = m.required(r, "password", |r, n| n.string(r))?;
            let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            let value =
                secret_header_value(r, &format!("{path}.password"), format!("Basic {enc}"))?;
            Some(Auth::Header {
                name: http::header::AUTHORIZATION,
                value,
            })
        }
        T::Header => {
            let name_s = m.required(r, "name", |r, n| n.string(r))?;
            let name = header_name(r, &format!("{path}.name"), &name_s)?;
            let value = m.required(r, "value", |r, n| n.string(r))?;
            if value.is_empty() {
                return Some(Auth::None);
            }
            let value = secret_header_value(r, &format!("{path}.value"), value)?;
            Some(Auth::Header { name, value })
        }
        T::Gcp => {
            let file = m
                .with(r, "credentials_file", |r, n| n.string(r))
                .filter(|f| !f.is_empty());
            if let Some(f) = &file {
                if let Err(e) = check_credentials_file(f) {
                    r.error(&format!("{path}.credentials_file"), e);
                    return None;
                }
            }
            Some(Auth::Gcp {
                credentials_file: file.map(PathBuf::from),
            })
        }
    }
}

/// A Google service-account key file: readable, JSON, with the fields the token grant needs.
pub fn check_credentials_file(path: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the credentials file `{path}`: {e}"))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("the credentials file `{path}` is not JSON: {e}"))?;
    if v.get("type").and_then(|t| t.as_str()) != Some("service_account") {
        return Err(format!(
            "`{path}` is not a service-account key file (its `type` must be `service_account`)"
        ));
    }
    let missing: Vec<&str> = ["client_email", "private_key", "token_uri"]
        .into_iter()
        .filter(|k| v.get(*k).and_then(|x| x.as_str()).is_none_or(str::is_empty))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the credentials file `{path}` lacks {}",
            missing.join(", ")
        ));
    }
    Ok(())
}

/// `aws_sigv4`: a region; both keys (a session token optional) or neither (the standard credential
/// chain, with `profile`). Empty values (`${AWS_ACCESS_KEY_ID:-}` unset) count as absent.
fn read_aws_auth(r: &mut Reader, m: &super::reader::Map) -> Option<AwsAuth> {
    let path = m.path().to_string();
    let text = |r: &mut Reader, key: &str| {
        m.with(r, key, |r, n| n.string(r))
            .filter(|s| !s.trim().is_empty())
    };
    let region = m.required(r, "region", |r, n| n.string(r)).and_then(|s| {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if s.is_empty() {
            r.error(
                &format!("{path}.region"),
                "the region is empty (is its environment variable set?)",
            );
            None
        } else if !ok {
            r.error(
                &format!("{path}.region"),
                format!("`{s}` is not an AWS region (e.g. us-east-1)"),
            );
            None
        } else {
            Some(s)
        }
    });
    let key_id = text(r, "access_key_id");
    let secret = text(r, "secret_access_key");
    let token = text(r, "session_token");
    let profile = text(r, "profile");
    let keys = match (key_id, secret) {
        (Some(id), Some(secret)) => Some(AwsKeys {
            access_key_id: id,
            secret_access_key: Secret::new(secret),
            session_token: token.map(Secret::new),
        }),
        (None, None) => {
            if token.is_some() {
                r.error(
                    &format!("{path}.session_token"),
                    "a session token goes with access_key_id and secret_access_key (give all three, or none for the standard AWS credential chain)",
                );
                return None;
            }
            None
        }
        (id, _) => {
            let missing = if id.is_some() {
                "secret_access_key"
            } else {
                "access_key_id"
            };
            r.error(
                &format!("{path}.{missing}"),
                "access_key_id and secret_access_key go together: give both, or neither for the standard AWS credential chain (environment, shared files + profile, web identity, ECS, EC2 instance metadata)",
            );
            return None;
        }
    };
    if keys.is_some() && profile.is_some() {
        r.warn(
            &format!("{path}.profile"),
            "ignored: the static keys are used (a profile is read only by the credential chain)",
        );
    }
    Some(AwsAuth {
        region: region?,
        keys,
        profile,
    })
}

fn read_header_op(r: &mut Reader, n: Node) -> Option<HeaderOp> {
    let m = n.map(r, &["op", "key", "value", "secret"])?;
    let op = m.required(r, "op", |r, n| {
        n.choice(
            r,
            &[
                ("insert", HeaderOpKind::Insert),
                ("replace", HeaderOpKind::Replace),
                ("remove", HeaderOpKind::Remove),
            ],
        )
    });
    let key_s = m.required(r, "key", |r, n| n.string(r))?;
    let key = header_name(r, &format!("{}.key", m.path()), &key_s);
    let value = match op {
        Some(HeaderOpKind::Remove) => None,
        Some(_) => {
            let v = m.required(r, "value", |r, n| n.string(r))?;
            match http::HeaderValue::from_str(&v) {
                Ok(v) => Some(v),
                Err(_) => {
                    r.error(&format!("{}.value", m.path()), "not a valid header value");
                    return None;
                }
            }
        }
        None => None,
    };
    let secret = m.with(r, "secret", |r, n| n.bool(r)).unwrap_or(false)
        || super::secret::sensitive_header(&key_s);
    Some(HeaderOp {
        op: op?,
        key: key?,
        value,
        secret,
    })
}

fn read_client(r: &mut Reader, n: Node) -> Option<ClientSettings> {
    let m = n.map(
        r,
        &[
            "connect_timeout",
            "first_byte_timeout",
            "stream_idle_timeout",
            "request_timeout",
            "idle_timeout",
            "tcp_keepalive",
            "user_agent",
            "proxy",
        ],
    )?;
    let d = ClientSettings::default();
    let proxy = m.with(r, "proxy", |r, n| {
        let s = n.string(r)?;
        if s.is_empty() {
            return None;
        }
        parse_proxy(&s).map_err(|e| r.error(n.path, e)).ok()
    });
    let request_timeout = m
        .with(r, "request_timeout", |r, n| n.duration(r))
        .unwrap_or(d.request_timeout);
    let keepalive = m
        .with(r, "tcp_keepalive", |r, n| n.duration(r))
        .unwrap_or(Duration::from_secs(60));
    Some(ClientSettings {
        connect_timeout: m
            .with(r, "connect_timeout", |r, n| n.duration(r))
            .unwrap_or(d.connect_timeout),
        first_byte_timeout: m
            .with(r, "first_byte_timeout", |r, n| n.duration(r))
            .unwrap_or(request_timeout),
        stream_idle_timeout: m
            .with(r, "stream_idle_timeout", |r, n| n.duration(r))
            .unwrap_or(request_timeout),
        request_timeout,
        idle_timeout: m
            .with(r, "idle_timeout", |r, n| n.duration(r))
            .unwrap_or(d.idle_timeout),
        tcp_keepalive: (!keepalive.is_zero()).then_some(keepalive),
        user_agent: m
            .with(r, "user_agent", |r, n| n.string(r))
            .filter(|s| !s.is_empty()),
        proxy,
    })
}

/// `http://[user:pass@]host:port` → where to send `CONNECT`.
pub fn parse_proxy(s: &str) -> Result<OutboundProxy, String> {
    let rest = s
        .strip_prefix("http://")
        .ok_or_else(|| "the proxy must be an http:// URL (HTTP CONNECT)".to_string())?;
    let rest = rest.trim_end_matches('/');
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| "invalid proxy port".to_string())?,
        ),
        None => (hostport, 80),
    };
    if host.is_empty() || hostport.contains('/') {
        return Err("invalid proxy URL; expected http://[user:pass@]host:port".into());
    }
    let authorization = userinfo.map(|u| {
        Secret::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(u)
        ))
    });
    Ok(OutboundProxy {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
        authorization,
    })
}

fn read_health(r: &mut Reader, n: Node, d: &HealthCheckConfig) -> Option<HealthCheckConfig> {
    let m = n.map(
        r,
        &[
            "interval",
            "path",
            "timeout",
            "unhealthy_after",
            "healthy_after",
        ],
    )?;
    let interval = m.with(r, "interval", |r, n| n.duration(r)).or(d.interval);
    let path = m
        .with(r, "path", |r, n| n.string(r))
        .unwrap_or_else(|| d.path.clone());
    if !path.starts_with('/') {
        r.error(
            &format!("{}.path", m.path()),
            "the path must start with `/`",
        );
    }
    let positive = |r: &mut Reader, key: &str, default: usize| -> usize {
        let v = m
            .with(r, key, |r, n| n.u64(r))
            .map(|v| v as usize)
            .unwrap_or(default);
        if v == 0 {
            r.error(&format!("{}.{key}", m.path()), "must be at least 1");
        }
        v.max(1)
    };
    let unhealthy_after = positive(r, "unhealthy_after", d.unhealthy_after);
    let healthy_after = positive(r, "healthy_after", d.healthy_after);
    Some(HealthCheckConfig {
        interval: interval.filter(|i| !i.is_zero()),
        path,
        timeout: m
            .with(r, "timeout", |r, n| n.duration(r))
            .unwrap_or(d.timeout),
        unhealthy_after,
        healthy_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = parse_url("https://api.openai.com/v1/").unwrap();
        assert!(u.tls);
        assert_eq!(
            (u.host.as_str(), u.port, u.base_path.as_str()),
            ("api.openai.com", 443, "/v1")
        );
        assert_eq!(u.authority, "api.openai.com");
        let u = parse_url("http://127.0.0.1:8000").unwrap();
        assert_eq!(
            (u.port, u.base_path.as_str(), u.authority.as_str()),
            (8000, "", "127.0.0.1:8000")
        );
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("http://u:p@x/").is_err());
    }
}
