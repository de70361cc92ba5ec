//! OpenAI and OpenAI-compatible upstreams: `POST {url}{endpoint}` with the upstream's auth. Azure
//! OpenAI speaks the same format on its own paths (`super::upstream_path`).

use super::{forwardable, upstream_path};
use crate::balance::upstream::apply_upstream_headers;
use crate::config::Upstream;
use crate::route::Endpoint;
use pingora::prelude::*;

/// Build the upstream request header for a model endpoint; `deployment` is the deployment's `model`
/// (Azure puts it in the path), `extra` its own headers (added when the client did not send them).
pub fn request_header(
    upstream: &Upstream,
    endpoint: Endpoint,
    deployment: &str,
    extra: &[(http::HeaderName, http::HeaderValue)],
    client: &RequestHeader,
    body_len: usize,
    request_id: &str,
) -> Result<RequestHeader> {
    let path = upstream_path(upstream, endpoint, deployment);
    // No header-case map: HTTP/1.1 names are case-insensitive, and keeping one costs allocations on
    // every request (measured with callgrind: cheaper than building with it, or cloning the client's
    // header the way Pingora's own proxy does).
    let mut req =
        RequestHeader::build_no_case("POST", path.as_bytes(), Some(client.headers.len() + 4))?;
    for (name, value) in client.headers.iter() {
        if forwardable(name) {
            req.append_header(name.clone(), value.clone())?;
        }
    }
    req.insert_header(http::header::HOST, upstream.url.authority.as_str())?;
    req.insert_header(http::header::CONTENT_LENGTH, body_len)?;
    // The body was validated as JSON, whatever the client labelled it.
    req.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    req.insert_header("x-request-id", request_id)?;
    for (name, value) in extra {
        if !req.headers.contains_key(name) {
            req.insert_header(name.clone(), value.clone())?;
        }
    }
    apply_upstream_headers(upstream, &mut req)?;
    Ok(req)
}
