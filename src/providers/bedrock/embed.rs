//! OpenAI embeddings ⇄ InvokeModel for Bedrock's embedding models (Amazon Titan Text Embeddings,
//! Cohere Embed).

use crate::providers::anthropic::{non_null, Cx, TranslateError};
use crate::providers::usage::Usage;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Map, Value};

/// The embedding model families InvokeModel is spoken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `amazon.titan-embed-text-v2*`: one `inputText`, `dimensions` 256 | 512 | 1024.
    TitanV2,
    /// `amazon.titan-embed-text-v1`, `amazon.titan-embed-g1-text-*`: one `inputText`.
    TitanV1,
    /// `cohere.embed-*`: up to 96 `texts`, `input_type` required.
    Cohere,
}

/// The family of a model id (a cross-region inference profile prefix such as `us.` ignored).
pub fn family(model: &str) -> Option<Family> {
    let base = model.split_once('.').map_or(model, |(head, rest)| {
        let geo = ["us", "eu", "apac", "us-gov", "global", "ca", "jp", "au"];
        if geo.contains(&head) {
            rest
        } else {
            model
        }
    });
    if base.starts_with("amazon.titan-embed-text-v2") {
        Some(Family::TitanV2)
    } else if base.starts_with("amazon.titan-embed-text-v1")
        || base.starts_with("amazon.titan-embed-g1-text")
    {
        Some(Family::TitanV1)
    } else if base.starts_with("cohere.embed") {
        Some(Family::Cohere)
    } else {
        None
    }
}

/// An embeddings request as InvokeModel takes it.
pub struct EmbedRequest {
    pub body: Bytes,
    pub family: Family,
    /// The client asked for `encoding_format: base64`.
    pub base64: bool,
}

/// OpenAI embeddings request `body` (params merged) → the model's InvokeModel body.
pub fn request(
    body: &Value,
    model: &str,
    drop_unsupported: bool,
) -> Result<EmbedRequest, TranslateError> {
    let req = body
        .as_object()
        .ok_or_else(|| TranslateError::invalid("body", "expected a JSON object"))?;
    let mut cx = Cx { drop_unsupported };
    let fam = family(model).ok_or_else(|| {
        TranslateError::unsupported(
            "model",
            format!("`{model}` is not an embedding model llmproxy speaks InvokeModel for (amazon.titan-embed-text-v1 / -v2, amazon.titan-embed-g1-text-*, cohere.embed-*)"),
        )
    })?;
    let texts: Vec<&str> = match non_null(req, "input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => {
            a.iter().filter_map(Value::as_str).collect()
        }
        Some(Value::Array(a)) if !a.is_empty() => {
            return Err(TranslateError::unsupported(
                "input",
                "token arrays (send the input as text)",
            ))
        }
        _ => {
            return Err(TranslateError::invalid(
                "input",
                "expected a string or a non-empty array of strings",
            ))
        }
    };
    let base64 = match non_null(req, "encoding_format") {
        None => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(_) => {
            return Err(TranslateError::invalid(
                "encoding_format",
                "expected `float` or `base64`",
            ))
        }
    };
    let dimensions = non_null(req, "dimensions");
    let mut out = Map::new();
    match fam {
        Family::TitanV1 | Family::TitanV2 => {
            let [text] = texts.as_slice() else {
                return Err(TranslateError::unsupported(
                    "input",
                    "Titan embedding models embed one input per request (send one string, or use a Cohere model for lists)",
                ));
            };
            out.insert("inputText".into(), Value::String((*text).to_owned()));
            match (fam, dimensions) {
                (_, None) => {}
                (Family::TitanV2, Some(d)) => match d.as_u64() {
                    Some(n @ (256 | 512 | 1024)) => {
                        out.insert("dimensions".into(), n.into());
                    }
                    _ => {
                        return Err(TranslateError::invalid(
                            "dimensions",
                            "Titan Text Embeddings V2 makes 256, 512 or 1024 dimensions",
                        ))
                    }
                },
                _ => cx.unsupported("dimensions", "this model's vectors have one size")?,
            }
        }
        Family::Cohere => {
            if texts.len() > 96 {
                return Err(TranslateError::invalid(
                    "input",
                    "Cohere Embed takes at most 96 texts per request",
                ));
            }
            out.insert("texts".into(), json!(texts));
            let input_type = match non_null(req, "input_type") {
                Some(Value::String(t)) => t.clone(),
                Some(_) => return Err(TranslateError::invalid("input_type", "expected a string")),
                None => "search_document".to_owned(),
            };
            out.insert("input_type".into(), Value::String(input_type));
            if let Some(t) = non_null(req, "truncate") {
                out.insert("truncate".into(), t.clone());
            }
            if dimensions.is_some() {
                cx.unsupported("dimensions", "Cohere Embed v3 vectors have one size")?;
            }
        }
    }
    let body = serde_json::to_vec(&Value::Object(out))
        .map(Bytes::from)
        .map_err(|e| TranslateError::invalid("body", e.to_string()))?;
    Ok(EmbedRequest {
        body,
        family: fam,
        base64,
    })
}

/// The vectors of an InvokeModel answer.
fn vectors(v: &Value, fam: Family) -> Option<Vec<&Vec<Value>>> {
    match fam {
        Family::TitanV1 | Family::TitanV2 => Some(vec![v.get("embedding")?.as_array()?]),
        Family::Cohere => {
            let e = v.get("embeddings")?;
            // `embeddings_by_type` answers (when `embedding_types` was sent) keep floats apart.
            let list = e.get("float").unwrap_or(e).as_array()?;
            list.iter().map(Value::as_array).collect()
        }
    }
}

/// An InvokeModel answer → an OpenAI embeddings list answering as `model`; `header_tokens`: the
/// `x-amzn-bedrock-input-token-count` header. `None` when the body is not the family's answer.
pub fn to_openai(
    body: &[u8],
    fam: Family,
    model: &str,
    base64: bool,
    header_tokens: Option<u64>,
) -> Option<(Bytes, Usage)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let tokens = v
        .get("inputTextTokenCount")
        .and_then(Value::as_u64)
        .or(header_tokens)
        .unwrap_or(0);
    let data: Vec<Value> = vectors(&v, fam)?
        .into_iter()
        .enumerate()
        .map(|(i, vec)| {
            let embedding = if base64 {
                let mut raw = Vec::with_capacity(vec.len() * 4);
                for x in vec {
                    raw.extend_from_slice(&(x.as_f64().unwrap_or(0.0) as f32).to_le_bytes());
                }
                Value::String(base64::engine::general_purpose::STANDARD.encode(raw))
            } else {
                Value::Array(vec.clone())
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let out = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    Some((Bytes::from(out.to_string()), Usage::new(tokens, 0)))
}
