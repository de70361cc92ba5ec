//! The provider's Files and Batches API, as OpenAI's reference defines it, below the upstream's URL:
//! `POST {url}/files` (multipart, `purpose=batch`), `GET {url}/files/{id}/content`,
//! `DELETE {url}/files/{id}`, `POST {url}/batches`, `GET {url}/batches/{id}`,
//! `POST {url}/batches/{id}/cancel`.
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

fn transport(e: reqwest::Error) -> ApiError {
    // Without the URL: it holds nothing secret, but the message stays short.
    ApiError {
        status: e.status().map(|s| s.as_u16()),
        message: e.without_url().to_string(),
    }
}

/// The Batch object (the fields the gateway reads).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Batch {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub output_file_id: Option<String>,
    #[serde(default)]
    pub error_file_id: Option<String>,
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
            upstream,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
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

    /// `POST /files` with `purpose=batch`: the JSONL input file. Returns its id.
    pub async fn upload(&self, jsonl: Bytes) -> Result<String, ApiError> {
        let (content_type, body) = multipart(jsonl);
        let req = self
            .http
            .post(self.url("/files"))
            .header(http::header::CONTENT_TYPE, content_type)
            .timeout(FILE_TIMEOUT)
            .body(body);
        let f: FileObject = self.json(req).await?;
        Ok(f.id)
    }

    /// `POST /batches`.
    pub async fn create(
        &self,
        input_file_id: &str,
        endpoint: &str,
        completion_window: &str,
    ) -> Result<Batch, ApiError> {
        let req = self
            .http
            .post(self.url("/batches"))
            .json(&serde_json::json!({
                "input_file_id": input_file_id,
                "endpoint": endpoint,
                "completion_window": completion_window,
                "metadata": {"created_by": "llmproxy"},
            }));
        self.json(req).await
    }

    /// `GET /batches/{id}`.
    pub async fn get(&self, batch_id: &str) -> Result<Batch, ApiError> {
        let req = self
            .http
            .get(self.url(&format!("/batches/{}", segment(batch_id))));
        self.json(req).await
    }

    /// `POST /batches/{id}/cancel`: the batch turns `cancelling`, then `cancelled` with the lines
    /// that finished in its output file.
    pub async fn cancel(&self, batch_id: &str) -> Result<Batch, ApiError> {
        let req = self
            .http
            .post(self.url(&format!("/batches/{}/cancel", segment(batch_id))));
        self.json(req).await
    }

    /// `GET /files/{id}/content`.
    pub async fn content(&self, file_id: &str) -> Result<Bytes, ApiError> {
        let req = self
            .http
            .get(self.url(&format!("/files/{}/content", segment(file_id))))
            .timeout(FILE_TIMEOUT);
        self.send(req).await?.bytes().await.map_err(transport)
    }

    /// `DELETE /files/{id}`.
    pub async fn delete_file(&self, file_id: &str) -> Result<(), ApiError> {
        let req = self
            .http
            .delete(self.url(&format!("/files/{}", segment(file_id))));
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

/// A `multipart/form-data` body with `purpose=batch` and the JSONL `file`; returns the content
/// type (with its boundary) and the body.
pub fn multipart(jsonl: Bytes) -> (String, Bytes) {
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
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"llmproxy-batch.jsonl\"\r\n\
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
        let (ct, body) = multipart(Bytes::from_static(b"{\"a\":1}\n"));
        let boundary = ct.strip_prefix("multipart/form-data; boundary=").unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.contains("name=\"purpose\"\r\n\r\nbatch\r\n"));
        assert!(text.contains("filename=\"llmproxy-batch.jsonl\""));
        assert!(text.contains("\r\n\r\n{\"a\":1}\n\r\n"));
        assert!(text.ends_with(&format!("\r\n--{boundary}--\r\n")));
    }

    #[test]
    fn ids_stay_one_segment() {
        assert_eq!(segment("batch_abc-1"), "batch_abc-1");
        assert_eq!(segment("../x?y"), "..%2Fx%3Fy");
    }

    #[test]
    fn final_statuses() {
        let b = |s: &str| Batch {
            id: "b".into(),
            status: s.into(),
            output_file_id: None,
            error_file_id: None,
        };
        assert!(b("completed").is_final() && b("cancelled").is_final());
        assert!(!b("cancelling").is_final() && !b("in_progress").is_final());
    }
}
