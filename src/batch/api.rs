//! The provider's Files and Batches API, as OpenAI's reference defines it, below the upstream's URL:
//! `POST {url}/files` (multipart, `purpose=batch`), `GET {url}/files/{id}/content`,
//! `DELETE {url}/files/{id}`, `POST {url}/batches`, `GET {url}/batches` (list),
//! `GET {url}/batches/{id}`, `POST {url}/batches/{id}/cancel`.
//!
//! Azure OpenAI (`provider: azure`) serves the same API on its own paths ([`Surface`]): with a dated
//! `api_version`, `{url}/openai/files?api-version=V`, `{url}/openai/batches?api-version=V`, ...,
//! and JSONL lines (and the batch's `endpoint`) written `/chat/completions`, `/embeddings`; on the
//! v1 surface (`api_version: v1 | preview | latest`), `{url}/openai/v1/files`, ... (with
//! `?api-version=preview|latest` for those channels) and lines written as OpenAI writes them. Each
//! line's `body.model` is the Azure deployment (a Global Batch deployment).
//!
//! Requests carry the upstream's own auth, user agent and header operations exactly as model
//! requests do ([`apply_upstream_headers`]); the client's key never goes here. reqwest is used
//! (background only): its connection setup, redirects and bodies of any size are what these rare,
//! file-sized calls need, and the request path's Pingora connector stays untouched.

use crate::balance::upstream::apply_upstream_headers;
use crate::config::Upstream;
use bytes::Bytes;
use pingora::http::RequestHeader;
use serde::Deserialize;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Uploads and downloads of files (up to OpenAI's 200 MB) may take longer than the upstream's
/// `request_timeout`, which bounds the other calls.
const FILE_TIMEOUT: Duration = Duration::from_secs(3600);

/// A failed call: the HTTP status when there was one, and what went wrong (the upstream's error
/// message, shortened; never a credential).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: Option<u16>,
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(s) => write!(f, "status {s}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// The upstream answered 4xx: it refused the call, which therefore changed nothing. A
    /// transport error, a timeout or a 5xx leave open whether it happened.
    pub fn is_refusal(&self) -> bool {
        self.status.is_some_and(|s| (400..500).contains(&s))
    }
}

fn transport(e: reqwest::Error) -> ApiError {
    // Without the URL: it holds nothing secret, but the message stays short.
    ApiError {
        status: e.status().map(|s| s.as_u16()),
        message: e.without_url().to_string(),
    }
}

/// The Batch object (the fields the gateway reads).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
pub struct Batch {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub input_file_id: Option<String>,
    #[serde(default)]
    pub output_file_id: Option<String>,
    #[serde(default)]
    pub error_file_id: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub created_at: Option<i64>,
    /// The `metadata` the batch was created with (`llmproxy_job` names the journal row).
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

impl Batch {
    /// `completed`, `failed`, `expired` and `cancelled` are final; `validating`, `in_progress`,
    /// `finalizing` and `cancelling` are not.
    pub fn is_final(&self) -> bool {
        matches!(
            self.status.as_str(),
            "completed" | "failed" | "expired" | "cancelled"
        )
    }

    /// The journal's job id the gateway wrote into the batch's `metadata` when it created it.
    pub fn job(&self) -> Option<&str> {
        self.metadata.as_ref()?.get(JOB_METADATA)?.as_str()
    }
}

/// The `metadata` key that names a batch's journal row: after a crash between creating a batch and
/// journaling its id, the batch is found again by listing the upstream's batches.
pub const JOB_METADATA: &str = "llmproxy_job";

/// A page of `GET /batches`.
#[derive(Debug, Deserialize)]
struct BatchList {
    #[serde(default)]
    data: Vec<Batch>,
    #[serde(default)]
    has_more: bool,
    #[serde(default)]
    last_id: Option<String>,
}

/// Looking for a job's batch reads at most this many pages of 100 (newest first).
const MAX_LIST_PAGES: usize = 50;
/// Clock skew allowed between the gateway and the provider when a listing stops at batches older
/// than the job's journal row.
const LIST_SKEW_MS: i64 = 10 * 60 * 1000;

/// How an upstream addresses its Files and Batches API.
#[derive(Debug, Clone, PartialEq)]
pub enum Surface {
    /// OpenAI's paths below the URL; lines and endpoint `/v1/chat/completions`.
    OpenAi,
    /// Azure's dated API: `{url}/openai/...?api-version=V`; lines and endpoint `/chat/completions`.
    AzureDated(String),
    /// Azure's v1 API: `{url}/openai/v1/...` (`?api-version=` the channel for `preview` / `latest`);
    /// lines and endpoint as OpenAI writes them.
    AzureV1(Option<String>),
}

impl Surface {
    pub fn of(upstream: &Upstream) -> Surface {
        if upstream.provider != crate::config::Provider::Azure {
            return Surface::OpenAi;
        }
        let v = upstream.api_version.clone().unwrap_or_default();
        match v.as_str() {
            "v1" => Surface::AzureV1(None),
            "preview" | "latest" => Surface::AzureV1(Some(v)),
            _ => Surface::AzureDated(v),
        }
    }

    /// The `url` of a JSONL line and the batch's `endpoint`.
    pub fn line_url(&self, endpoint: super::BatchEndpoint) -> &'static str {
        match self {
            Surface::AzureDated(_) => endpoint.azure_url(),
            _ => endpoint.url(),
        }
    }

    fn prefix(&self) -> &'static str {
        match self {
            Surface::OpenAi => "",
            Surface::AzureDated(_) => "/openai",
            Surface::AzureV1(_) => "/openai/v1",
        }
    }

    fn api_version(&self) -> Option<&str> {
        match self {
            Surface::OpenAi => None,
            Surface::AzureDated(v) => Some(v.as_str()).filter(|v| !v.is_empty()),
            Surface::AzureV1(q) => q.as_deref(),
        }
    }
}

#[derive(Deserialize)]
struct FileObject {
    id: String,
}

/// One upstream's Files and Batches API.
pub struct BatchApi {
    http: reqwest::Client,
    /// `scheme://authority/base_path`, without a trailing slash.
    base: String,
    headers: http::HeaderMap,
    surface: Surface,
    pub upstream: Arc<Upstream>,
}

impl BatchApi {
    pub fn new(upstream: Arc<Upstream>) -> Result<BatchApi, ApiError> {
        let c = &upstream.client;
        let mut b = reqwest::Client::builder()
            .connect_timeout(c.connect_timeout)
            .timeout(c.request_timeout.max(Duration::from_secs(30)))
            .pool_idle_timeout(c.idle_timeout);
        if let Some(ka) = c.tcp_keepalive {
            b = b.tcp_keepalive(ka);
        }
        b = match &c.proxy {
            // The outbound proxy the model requests use (they tunnel with CONNECT; reqwest tunnels
            // HTTPS the same way and forwards plain HTTP in absolute form).
            Some(p) => {
                let host = if p.host.contains(':') {
                    format!("[{}]", p.host)
                } else {
                    p.host.clone()
                };
                let mut proxy =
                    reqwest::Proxy::all(format!("http://{host}:{}", p.port)).map_err(transport)?;
                if let Some(auth) = &p.authorization {
                    let v = http::HeaderValue::from_str(auth.expose()).map_err(|_| ApiError {
                        status: None,
                        message: "invalid outbound proxy credentials".into(),
                    })?;
                    proxy = proxy.custom_http_auth(v);
                }
                b.proxy(proxy)
            }
            // Like model requests: never a proxy from the environment.
            None => b.no_proxy(),
        };
        let http = b.build().map_err(transport)?;
        let u = &upstream.url;
        let base = format!(
            "{}://{}{}",
            if u.tls { "https" } else { "http" },
            u.authority,
            u.base_path
        );
        // The upstream's auth, user agent and header operations, as on every model request.
        let mut h = RequestHeader::build("POST", b"/", None).map_err(|e| ApiError {
            status: None,
            message: format!("request header: {e}"),
        })?;
        apply_upstream_headers(&upstream, &mut h).map_err(|e| ApiError {
            status: None,
            message: format!("upstream headers: {e}"),
        })?;
        Ok(BatchApi {
            http,
            base,
            headers: h.headers.clone(),
            surface: Surface::of(&upstream),
            upstream,
        })
    }

    pub fn surface(&self) -> &Surface {
        &self.surface
    }

    /// `path` (`/files`, `/batches/{id}`, ...) on this upstream's surface, with the `api-version`
    /// it needs and `query` (values percent-encoded).
    fn url(&self, path: &str, query: &[(&str, &str)]) -> String {
        let mut u = format!("{}{}{path}", self.base, self.surface.prefix());
        let version = self.surface.api_version().map(|v| ("api-version", v));
        for (i, (k, v)) in version.iter().chain(query).enumerate() {
            u.push(if i == 0 { '?' } else { '&' });
            u.push_str(k);
            u.push('=');
            u.push_str(&segment(v));
        }
        u
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ApiError> {
        let resp = req
            .headers(self.headers.clone())
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        Err(ApiError {
            status: Some(status.as_u16()),
            message: error_message(&body),
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ApiError> {
        let body = self.send(req).await?.bytes().await.map_err(transport)?;
        serde_json::from_slice(&body).map_err(|e| ApiError {
            status: None,
            message: format!("unexpected answer: {e}"),
        })
    }

    /// `POST /files` with `purpose=batch`: the JSONL input file (named after the job). Returns its
    /// id.
    pub async fn upload(&self, jsonl: Bytes, job_id: &str) -> Result<String, ApiError> {
        let (content_type, body) = multipart(jsonl, &format!("llmproxy-{job_id}.jsonl"));
        let req = self
            .http
            .post(self.url("/files", &[]))
            .header(http::header::CONTENT_TYPE, content_type)
            .timeout(FILE_TIMEOUT)
            .body(body);
        let f: FileObject = self.json(req).await?;
        Ok(f.id)
    }

    /// `POST /batches`, with `metadata.llmproxy_job` = `job_id` (so the batch can be found again
    /// when the answer is lost).
    pub async fn create(
        &self,
        input_file_id: &str,
        endpoint: &str,
        completion_window: &str,
        job_id: &str,
    ) -> Result<Batch, ApiError> {
        let req = self
            .http
            .post(self.url("/batches", &[]))
            .json(&serde_json::json!({
                "input_file_id": input_file_id,
                "endpoint": endpoint,
                "completion_window": completion_window,
                "metadata": {"created_by": "llmproxy", JOB_METADATA: job_id},
            }));
        self.json(req).await
    }

    /// `GET /batches/{id}`.
    pub async fn get(&self, batch_id: &str) -> Result<Batch, ApiError> {
        let req = self
            .http
            .get(self.url(&format!("/batches/{}", segment(batch_id)), &[]));
        self.json(req).await
    }

    /// `GET /batches?limit=100[&after=ID]`: one page, newest first.
    async fn list(&self, after: Option<&str>) -> Result<BatchList, ApiError> {
        let mut query = vec![("limit", "100")];
        if let Some(a) = after {
            query.push(("after", a));
        }
        let req = self.http.get(self.url("/batches", &query));
        self.json(req).await
    }

    /// The batch created for journal row `job_id` (its `metadata.llmproxy_job`), if the upstream
    /// has one: pages through `GET /batches` until the batch is found, the pages run out, or (when
    /// the pages come newest first, as OpenAI and Azure list them) they reach batches created
    /// before the row was written (`not_before_ms`, less some clock skew). `Err` when that could
    /// not be decided (the listing failed, or [`MAX_LIST_PAGES`] pages were not enough).
    pub async fn find_job(
        &self,
        job_id: &str,
        not_before_ms: i64,
    ) -> Result<Option<Batch>, ApiError> {
        let bound = not_before_ms.saturating_sub(LIST_SKEW_MS);
        let mut after: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let page = self.list(after.as_deref()).await?;
            if let Some(b) = page.data.iter().find(|b| b.job() == Some(job_id)) {
                return Ok(Some(b.clone()));
            }
            let times: Vec<Option<i64>> = page.data.iter().map(|b| b.created_at).collect();
            let newest_first = times
                .windows(2)
                .all(|w| matches!((w[0], w[1]), (Some(a), Some(b)) if a >= b));
            let past_the_row = newest_first
                && times
                    .last()
                    .copied()
                    .flatten()
                    .is_some_and(|t| t.saturating_mul(1000) < bound);
            let next = page
                .last_id
                .clone()
                .or_else(|| page.data.last().map(|b| b.id.clone()));
            if !page.has_more || page.data.is_empty() || past_the_row || next.is_none() {
                return Ok(None);
            }
            after = next;
        }
        Err(ApiError {
            status: None,
            message: format!(
                "{MAX_LIST_PAGES} pages of batches listed without reaching the job's creation"
            ),
        })
    }

    /// `POST /batches/{id}/cancel`: the batch turns `cancelling`, then `cancelled` with the lines
    /// that finished in its output file.
    pub async fn cancel(&self, batch_id: &str) -> Result<Batch, ApiError> {
        let req = self
            .http
            .post(self.url(&format!("/batches/{}/cancel", segment(batch_id)), &[]));
        self.json(req).await
    }

    /// `GET /files/{id}/content`.
    pub async fn content(&self, file_id: &str) -> Result<Bytes, ApiError> {
        let req = self
            .http
            .get(self.url(&format!("/files/{}/content", segment(file_id)), &[]))
            .timeout(FILE_TIMEOUT);
        self.send(req).await?.bytes().await.map_err(transport)
    }

    /// `DELETE /files/{id}`.
    pub async fn delete_file(&self, file_id: &str) -> Result<(), ApiError> {
        let req = self
            .http
            .delete(self.url(&format!("/files/{}", segment(file_id)), &[]));
        self.send(req).await.map(|_| ())
    }
}

/// An id as one path segment: ids are `[A-Za-z0-9_-]` at OpenAI; anything else is
/// percent-encoded so an id can never change the path's shape.
fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `error.message` of an OpenAI-shaped error body, else the start of the body.
fn error_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if let Some(m) = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(|m| m.as_str())
    {
        return m.chars().take(300).collect();
    }
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
}

/// A `multipart/form-data` body with `purpose=batch` and the JSONL `file` named `filename` (ASCII
/// letters, digits, `-`, `_`, `.`); returns the content type (with its boundary) and the body.
pub fn multipart(jsonl: Bytes, filename: &str) -> (String, Bytes) {
    // A boundary that does not occur in the content (random; checked anyway).
    let boundary = loop {
        let b = format!("llmproxy-{:032x}", rand::random::<u128>());
        if memchr::memmem::find(&jsonl, b.as_bytes()).is_none() {
            break b;
        }
    };
    let mut out = Vec::with_capacity(jsonl.len() + 320);
    out.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             Content-Type: application/jsonl\r\n\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(&jsonl);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/form-data; boundary={boundary}"),
        Bytes::from(out),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_body_has_both_parts() {
        let (ct, body) = multipart(Bytes::from_static(b"{\"a\":1}\n"), "llmproxy-j1.jsonl");
        let boundary = ct.strip_prefix("multipart/form-data; boundary=").unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.contains("name=\"purpose\"\r\n\r\nbatch\r\n"));
        assert!(text.contains("filename=\"llmproxy-j1.jsonl\""));
        assert!(text.contains("\r\n\r\n{\"a\":1}\n\r\n"));
        assert!(text.ends_with(&format!("\r\n--{boundary}--\r\n")));
    }

    #[test]
    fn ids_stay_one_segment() {
        assert_eq!(segment("batch_abc-1"), "batch_abc-1");
        assert_eq!(segment("../x?y"), "..%2Fx%3Fy");
    }

    fn api(url: &str, extra: &str) -> BatchApi {
        let yaml = format!(
            "server: {{listeners: [{{name: m, listen: \"127.0.0.1:1\"}}]}}\nupstreams: [{{name: u, url: \"{url}\"{extra}}}]\nmodels: [{{name: m, deployments: [{{upstream: u, model: d}}]}}]\n"
        );
        let cfg = crate::config::parse(&yaml, &crate::config::reader::ProcessEnv).unwrap();
        BatchApi::new(Arc::new(cfg.upstreams[0].clone())).unwrap()
    }

    #[test]
    fn surfaces_address_openai_and_azure() {
        use crate::batch::BatchEndpoint::{ChatCompletions, Embeddings};
        let page = [("limit", "100"), ("after", "batch_1")];
        let o = api("https://api.openai.com/v1", ", provider: openai");
        assert_eq!(o.url("/files", &[]), "https://api.openai.com/v1/files");
        assert_eq!(
            o.url("/batches", &page),
            "https://api.openai.com/v1/batches?limit=100&after=batch_1"
        );
        assert_eq!(
            o.surface().line_url(ChatCompletions),
            "/v1/chat/completions"
        );

        let az = "https://ex.openai.azure.com";
        let dated = api(az, ", provider: azure, api_version: 2024-10-21");
        assert_eq!(dated.surface(), &Surface::AzureDated("2024-10-21".into()));
        assert_eq!(
            dated.url("/files/file-1/content", &[]),
            "https://ex.openai.azure.com/openai/files/file-1/content?api-version=2024-10-21"
        );
        assert_eq!(
            dated.url("/batches", &page),
            "https://ex.openai.azure.com/openai/batches?api-version=2024-10-21&limit=100&after=batch_1"
        );
        assert_eq!(
            dated.surface().line_url(ChatCompletions),
            "/chat/completions"
        );
        assert_eq!(dated.surface().line_url(Embeddings), "/embeddings");

        let v1 = api(az, ", provider: azure, api_version: v1");
        assert_eq!(
            v1.url("/files", &[]),
            "https://ex.openai.azure.com/openai/v1/files"
        );
        assert_eq!(v1.surface().line_url(Embeddings), "/v1/embeddings");
        let preview = api(az, ", provider: azure, api_version: preview");
        assert_eq!(
            preview.url("/batches/b1/cancel", &[]),
            "https://ex.openai.azure.com/openai/v1/batches/b1/cancel?api-version=preview"
        );
    }

    #[test]
    fn batches_name_their_job() {
        let b: Batch = serde_json::from_str(
            r#"{"id":"batch_1","status":"validating","created_at":1700000000,"input_file_id":"file-1","metadata":{"created_by":"llmproxy","llmproxy_job":"j1"},"extra":1}"#,
        )
        .unwrap();
        assert_eq!(b.job(), Some("j1"));
        assert_eq!(b.created_at, Some(1_700_000_000));
        let b: Batch = serde_json::from_str(r#"{"id":"b","status":"x","metadata":null}"#).unwrap();
        assert_eq!(b.job(), None);
        let e = |s| ApiError {
            status: s,
            message: String::new(),
        };
        assert!(e(Some(400)).is_refusal() && e(Some(429)).is_refusal());
        assert!(!e(Some(502)).is_refusal() && !e(None).is_refusal());
    }

    #[test]
    fn final_statuses() {
        let b = |s: &str| Batch {
            id: "b".into(),
            status: s.into(),
            ..Default::default()
        };
        assert!(b("completed").is_final() && b("cancelled").is_final());
        assert!(!b("cancelling").is_final() && !b("in_progress").is_final());
    }
}
