//! The Files API's side of batches: `multipart/form-data` uploads, the validation of a batch input
//! file (JSONL) and the stored files.

use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Response, StatusCode};
use serde_json::Value;

use super::store::BatchStore;
use super::{invalid, Dialect};
use crate::body::{json_response, now_secs, MockBody};
use crate::server::State;

/// OpenAI's limit of requests in one batch input file.
const MAX_BATCH_LINES: usize = 50_000;

/// A stored file: an uploaded batch input, or a batch's output / error file.
pub(super) struct StoredFile {
    pub(super) id: String,
    pub(super) filename: String,
    pub(super) purpose: &'static str,
    pub(super) created_at: u64,
    pub(super) content: Bytes,
    /// The validated requests of a `batch` input file.
    pub(super) input: Option<Arc<BatchInput>>,
}

impl StoredFile {
    pub(super) fn object(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "object": "file",
            "bytes": self.content.len(),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": null,
            "status_details": null,
        })
    }
}

/// The requests of a validated batch input file.
pub(super) struct BatchInput {
    pub(super) url: String,
    pub(super) model: String,
    /// `(custom_id, body)` in file order.
    pub(super) lines: Vec<(String, Value)>,
}

/// A part of a `multipart/form-data` body.
struct FormPart {
    name: String,
    filename: Option<String>,
    data: Bytes,
}

/// The boundary of a `multipart/form-data` content type.
fn multipart_boundary(content_type: &str) -> Option<&str> {
    let (mime, params) = content_type.split_once(';')?;
    if !mime.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params
        .split(';')
        .find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| v.trim().trim_matches('"'))
        })
        .filter(|b| !b.is_empty())
}

/// `name` and `filename` of a part's `Content-Disposition: form-data; ...` header.
fn form_disposition(head: &str) -> Option<(String, Option<String>)> {
    let value = head.split("\r\n").find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-disposition")
            .then_some(v)
    })?;
    let (mut name, mut filename) = (None, None);
    for param in value.split(';').skip(1) {
        if let Some((k, v)) = param.split_once('=') {
            let v = v.trim().trim_matches('"').to_owned();
            match k.trim() {
                "name" => name = Some(v),
                "filename" => filename = Some(v),
                _ => {}
            }
        }
    }
    Some((name?, filename))
}

/// Split a `multipart/form-data` body (RFC 7578) into its parts.
fn parse_multipart(body: &Bytes, boundary: &str) -> Result<Vec<FormPart>, String> {
    use memchr::memmem;
    let open = format!("--{boundary}");
    let close = format!("\r\n--{boundary}");
    let malformed = |what: &str| format!("Malformed multipart/form-data body: {what}.");
    let mut pos =
        memmem::find(body, open.as_bytes()).ok_or_else(|| malformed("no boundary"))? + open.len();
    let mut parts = Vec::new();
    loop {
        let rest = &body[pos..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        if !rest.starts_with(b"\r\n") {
            return Err(malformed("a boundary is not followed by CRLF"));
        }
        let head_end = memmem::find(rest, b"\r\n\r\n").ok_or_else(|| malformed("part headers"))?;
        let head = std::str::from_utf8(&rest[2.min(head_end)..head_end])
            .map_err(|_| malformed("part headers are not UTF-8"))?;
        let data_start = pos + head_end + 4;
        let data_len = memmem::find(&body[data_start..], close.as_bytes())
            .ok_or_else(|| malformed("no closing boundary"))?;
        let (name, filename) =
            form_disposition(head).ok_or_else(|| malformed("a part has no form-data name"))?;
        parts.push(FormPart {
            name,
            filename,
            data: body.slice(data_start..data_start + data_len),
        });
        pos = data_start + data_len + close.len();
    }
}

/// A rejected batch input file: message and code (`param` is `file`).
type InputError = (String, &'static str);

/// Validate a batch input file (JSONL) as OpenAI describes it: one JSON object a line with a
/// unique `custom_id`, `method: POST`, a supported `url` (the same on every line) and a `body`
/// with a `model` (the same on every line). Blank lines are skipped.
fn validate_batch_input(content: &[u8], dialect: Dialect) -> Result<BatchInput, InputError> {
    let text = std::str::from_utf8(content)
        .map_err(|_| ("The file is not valid UTF-8.".to_owned(), "invalid_file"))?;
    let mut seen = std::collections::HashSet::new();
    let mut lines = Vec::new();
    let mut first: Option<(String, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let err = |m: String, code: &'static str| Err((format!("Line {n}: {m}"), code));
        let Ok(v) = serde_json::from_str::<Value>(raw) else {
            return err(
                "this line is not parseable as valid JSON.".into(),
                "invalid_json_line",
            );
        };
        if !v.is_object() {
            return err(
                "each line must be a JSON object.".into(),
                "invalid_json_line",
            );
        }
        let custom_id = match v.get("custom_id").and_then(Value::as_str) {
            Some(c) if !c.is_empty() => c.to_owned(),
            _ => {
                return err(
                    "'custom_id' is required and must be a non-empty string.".into(),
                    "missing_custom_id",
                )
            }
        };
        if !seen.insert(custom_id.clone()) {
            return err(
                format!("the custom_id '{custom_id}' is not unique in the file."),
                "duplicate_custom_id",
            );
        }
        if v.get("method").and_then(Value::as_str) != Some("POST") {
            return err("'method' must be 'POST'.".into(), "invalid_method");
        }
        let url = v.get("url").and_then(Value::as_str).unwrap_or("");
        if !dialect.accepts(url) {
            return err(
                format!("'url' must be one of {}.", dialect.accepted()),
                "invalid_url",
            );
        }
        let Some(body) = v.get("body").filter(|b| b.is_object()) else {
            return err("'body' must be a JSON object.".into(), "invalid_body");
        };
        let model = match body.get("model").and_then(Value::as_str) {
            Some(m) if !m.is_empty() => m,
            _ => return err("'body.model' is required.".into(), "missing_model"),
        };
        match &first {
            None => first = Some((url.to_owned(), model.to_owned())),
            Some((u, _)) if u != url => {
                return err(
                    format!("every line must have the same 'url' (the first line has '{u}')."),
                    "url_mismatch",
                )
            }
            Some((_, m)) if m != model => {
                return err(
                    format!(
                        "every line must have the same 'body.model' (the first line has '{m}')."
                    ),
                    "model_mismatch",
                )
            }
            Some(_) => {}
        }
        lines.push((custom_id, body.clone()));
        if lines.len() > MAX_BATCH_LINES {
            return Err((
                format!("The file has more than {MAX_BATCH_LINES} requests."),
                "too_many_tasks",
            ));
        }
    }
    let Some((url, model)) = first else {
        return Err(("The file contains no requests.".into(), "empty_file"));
    };
    Ok(BatchInput { url, model, lines })
}

/// `POST /v1/files`.
pub(super) fn upload_file(
    state: &State,
    store: &mut BatchStore,
    headers: &HeaderMap,
    body: &Bytes,
    dialect: Dialect,
) -> Response<MockBody> {
    let bad = |m: &str, param: &str, code: &str| {
        invalid(state, StatusCode::BAD_REQUEST, m, Some(param), Some(code))
    };
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(boundary) = multipart_boundary(ct) else {
        return invalid(
            state,
            StatusCode::BAD_REQUEST,
            "Expected a multipart/form-data body (with a boundary).",
            None,
            Some("invalid_content_type"),
        );
    };
    let parts = match parse_multipart(body, boundary) {
        Ok(p) => p,
        Err(m) => {
            return invalid(
                state,
                StatusCode::BAD_REQUEST,
                &m,
                None,
                Some("invalid_multipart"),
            )
        }
    };
    let Some(purpose) = parts.iter().find(|p| p.name == "purpose") else {
        return bad(
            "Missing required parameter: 'purpose'.",
            "purpose",
            "missing_required_parameter",
        );
    };
    let purpose = String::from_utf8_lossy(&purpose.data);
    if purpose.trim() != "batch" {
        return bad(
            &format!(
                "Invalid value for 'purpose': '{}'. This mock supports only 'batch'.",
                purpose.trim()
            ),
            "purpose",
            "invalid_value",
        );
    }
    let Some(file) = parts.iter().find(|p| p.name == "file") else {
        return bad(
            "Missing required parameter: 'file'.",
            "file",
            "missing_required_parameter",
        );
    };
    let input = match validate_batch_input(&file.data, dialect) {
        Ok(i) => i,
        Err((m, code)) => return bad(&m, "file", code),
    };
    let id = format!("file-mock{}", store.next());
    let f = StoredFile {
        id,
        filename: file
            .filename
            .clone()
            .unwrap_or_else(|| "upload.jsonl".into()),
        purpose: "batch",
        created_at: now_secs(),
        content: file.data.clone(),
        input: Some(Arc::new(input)),
    };
    let obj = f.object();
    store.files.push(f);
    store.files_uploaded += 1;
    json_response(state, StatusCode::OK, obj.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_parts_are_split() {
        let body = Bytes::from_static(
            b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XyZ\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n{}\r\n--x\n{}\r\n--XyZ--\r\n",
        );
        let b = multipart_boundary("multipart/form-data; boundary=\"XyZ\"").unwrap();
        let parts = parse_multipart(&body, b).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "purpose");
        assert_eq!(&parts[0].data[..], b"batch");
        assert_eq!(parts[1].filename.as_deref(), Some("a.jsonl"));
        assert_eq!(&parts[1].data[..], b"{}\r\n--x\n{}");
        assert!(multipart_boundary("application/json").is_none());
        assert!(parse_multipart(&Bytes::from_static(b"--XyZ\r\nno end"), "XyZ").is_err());
    }
}
