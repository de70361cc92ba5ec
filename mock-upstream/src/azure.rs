//! Azure OpenAI's dialect: the paths under `/openai/`, Azure's own refusals, its 429 and the
//! rate-limit headers it sends on every answer. The answers themselves are the OpenAI surface's
//! (`openai::respond`).
//!
//! # Azure OpenAI dialect (paths under `/openai/`)
//!
//! As Azure's data-plane REST reference documents it:
//!
//! * `POST /openai/deployments/{deployment}/chat/completions|completions|embeddings?api-version=V`:
//!   the same answers as the OpenAI endpoints, with `model` = the
//!   deployment name (Azure ignores the body's `model`).
//! * `POST /openai/v1/responses` (also `/openai/v1/chat/completions`, ...): the
//!   v1 surface, `api-version` optional, `model` from the body.
//! * `GET /openai/models?api-version=V`: the model list (Azure's health probe).
//! * Missing or empty `api-version` on a dated path, or an unknown `/openai/...`
//!   path: 404 `{"error":{"code":"404","message":"Resource not found"}}`. Neither
//!   `api-key` nor `Authorization`: 401 `{"error":{"code":"401","message":"Access
//!   denied due to invalid subscription key or wrong API endpoint. ..."}}`.
//! * A 429 (`x-mock-status`, `/__mock/fail`) is Azure-shaped:
//!   `{"error":{"code":"429","message":"Requests to the ... Operation under Azure
//!   OpenAI API version V have exceeded ... Please retry after N seconds. ..."}}`
//!   with `retry-after` (`--retry-after`, or `x-mock-retry-after: N` per request,
//!   default 1) and `x-ratelimit-remaining-requests: 0` /
//!   `x-ratelimit-remaining-tokens: 0`. Other failures keep the OpenAI shape
//!   (Azure relays the model's own errors in it).
//! * Successful Azure answers carry `x-ratelimit-remaining-requests` and
//!   `x-ratelimit-remaining-tokens` (fixed values unless `--rpm`/`--tpm` are
//!   set, whose OpenAI-style headers then win), as Azure sends on every answer.
//!
//! The Files and Batch API on Azure's surfaces: see `batch`.

use http::header::HeaderValue;
use http::{HeaderMap, Response, StatusCode};

use crate::body::{self, hdr_u64, json_response, query_param, MockBody};
use crate::openai::{openai_endpoint, Endpoint};
use crate::server::State;

/// An Azure service-level error: `{"error":{"code":"<status>","message":...}}`.
fn service_error(state: &State, status: StatusCode, message: &str) -> Response<MockBody> {
    let message = serde_json::to_string(message).unwrap_or_default();
    let body = format!(
        r#"{{"error":{{"code":"{}","message":{message}}}}}"#,
        status.as_u16()
    );
    json_response(state, status, body)
}

/// A failure answer on an Azure path: 429 in Azure's own shape and headers, anything else as
/// `mock_error`.
pub(crate) fn failure(
    state: &State,
    status: StatusCode,
    headers: &HeaderMap,
    az: &Route,
) -> Response<MockBody> {
    if status != StatusCode::TOO_MANY_REQUESTS {
        return body::mock_error(state, status);
    }
    let secs = hdr_u64(headers, "x-mock-retry-after")
        .or(state.retry_after)
        .unwrap_or(1);
    let op = match az.endpoint {
        Some(Endpoint::Chat) => "ChatCompletions_Create",
        Some(Endpoint::Completions) => "Completions_Create",
        Some(Endpoint::Embeddings) => "Embeddings_Create",
        _ => "Responses_Create",
    };
    let message = format!(
        "Requests to the {op} Operation under Azure OpenAI API version {} have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after {secs} seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.",
        az.api_version.as_deref().unwrap_or("v1")
    );
    let mut resp = service_error(state, status, &message);
    let h = resp.headers_mut();
    h.insert("retry-after", HeaderValue::from(secs));
    h.insert(
        "x-ratelimit-remaining-requests",
        HeaderValue::from_static("0"),
    );
    h.insert(
        "x-ratelimit-remaining-tokens",
        HeaderValue::from_static("0"),
    );
    resp
}

/// A request on Azure's paths (`/openai/...`).
pub(crate) struct Route {
    pub(crate) endpoint: Option<Endpoint>,
    /// The deployment segment, percent-decoded.
    pub(crate) deployment: Option<String>,
    /// Dated paths need `?api-version=`; the v1 surface does not.
    needs_version: bool,
    api_version: Option<String>,
}

/// A URL path segment with its `%XX` escapes decoded (invalid ones kept as they are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The route of a path on Azure's surface, `None` for a path outside `/openai`.
pub(crate) fn route(path: &str, query: Option<&str>) -> Option<Route> {
    if path != "/openai" && !path.starts_with("/openai/") {
        return None;
    }
    let api_version = query_param(query, "api-version")
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    let (endpoint, deployment, needs_version) =
        if let Some(rest) = path.strip_prefix("/openai/deployments/") {
            match rest.split_once('/') {
                Some((d, op)) if !d.is_empty() => {
                    let ep = match op {
                        "chat/completions" => Some(Endpoint::Chat),
                        "completions" => Some(Endpoint::Completions),
                        "embeddings" => Some(Endpoint::Embeddings),
                        _ => None,
                    };
                    (ep, Some(percent_decode(d)), true)
                }
                _ => (None, None, true),
            }
        } else if path == "/openai/models" {
            (Some(Endpoint::Models), None, true)
        } else if let Some(rest) = path.strip_prefix("/openai/v1") {
            (openai_endpoint(rest), None, false)
        } else {
            (None, None, true)
        };
    Some(Route {
        endpoint,
        deployment,
        needs_version,
        api_version,
    })
}

/// Azure's own refusals, before anything else: no `api-version` or an unknown path (404), no key
/// (401).
pub(crate) fn reject(
    state: &State,
    az: &Route,
    batch_api: bool,
    headers: &HeaderMap,
) -> Option<Response<MockBody>> {
    if (az.endpoint.is_none() && !batch_api) || (az.needs_version && az.api_version.is_none()) {
        return Some(service_error(
            state,
            StatusCode::NOT_FOUND,
            "Resource not found",
        ));
    }
    let has_key = headers.get("api-key").is_some_and(|v| !v.is_empty())
        || headers
            .get(http::header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes().starts_with(b"Bearer "));
    if !has_key {
        return Some(service_error(
            state,
            StatusCode::UNAUTHORIZED,
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
        ));
    }
    None
}

/// The rate-limit headers Azure sends on every successful answer (it sends no reset headers).
/// Applied before the limiter's own, which win when a limit is set.
pub(crate) fn success_headers(h: &mut HeaderMap) {
    h.insert(
        "x-ratelimit-remaining-requests",
        HeaderValue::from_static("99"),
    );
    h.insert(
        "x-ratelimit-remaining-tokens",
        HeaderValue::from_static("99000"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = route(
            "/openai/deployments/my%20dep/chat/completions",
            Some("api-version=2024-10-21"),
        )
        .unwrap();
        assert_eq!(r.endpoint, Some(Endpoint::Chat));
        assert_eq!(r.deployment.as_deref(), Some("my dep"));
        assert_eq!(r.api_version.as_deref(), Some("2024-10-21"));
        assert!(r.needs_version);
        let r = route("/openai/v1/responses", None).unwrap();
        assert_eq!(r.endpoint, Some(Endpoint::Responses));
        assert!(!r.needs_version);
        let r = route("/openai/models", Some("api-version=")).unwrap();
        assert_eq!(r.endpoint, Some(Endpoint::Models));
        assert_eq!(r.api_version, None);
        assert_eq!(
            route("/openai/deployments/d/images", None)
                .unwrap()
                .endpoint,
            None
        );
        assert!(route("/v1/chat/completions", None).is_none());
        assert!(route("/openaix", None).is_none());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
    }
}
