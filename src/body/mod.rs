//! Request bodies: parse the top level of a JSON object without building a tree (each field stays a
//! borrowed slice of raw JSON, see [`scan`]), and re-serialise with `model` rewritten.
//!
//! The gateway reads the whole body before choosing a deployment (routing needs `model`, which can
//! sit anywhere in the body) and holds it as `Bytes`, so every attempt can resend it whatever its
//! size. The cost is one validation pass over the body and, only when the deployment's model name
//! differs from the requested one (or a field must change), one copy to splice the new name in.

pub mod scan;

use crate::error::GatewayError;
use bytes::Bytes;

/// The top-level fields of a JSON object request, in order, each value unparsed.
pub struct JsonBody<'a> {
    fields: Vec<scan::Member<'a>>,
}

/// Per-request overrides in the body, removed before forwarding; the exchange caps them
/// at the configured limits.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Overrides {
    pub num_retries: Option<usize>,
    pub request_timeout: Option<std::time::Duration>,
    pub fallbacks: Option<Vec<String>>,
    pub context_window_fallbacks: Option<Vec<String>>,
}

/// Body fields that control the gateway and never reach an upstream.
pub const CONTROL_FIELDS: &[&str] = &[
    "caching",
    "cache",
    "num_retries",
    "request_timeout",
    "fallbacks",
    "context_window_fallbacks",
];

/// What the gateway needs from a model request.
pub struct ModelRequest<'a> {
    pub body: JsonBody<'a>,
    pub model: String,
    pub stream: bool,
    pub overrides: Overrides,
    /// Whether the body has gateway control fields (then it must be re-serialised without them).
    pub has_controls: bool,
}

/// Deeper JSON is refused: nothing legitimate nests this far, and later stages (token counting,
/// cache keys) walk the tree.
pub const MAX_JSON_DEPTH: usize = 64;

impl<'a> JsonBody<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<JsonBody<'a>, GatewayError> {
        if bytes.is_empty() {
            return Err(GatewayError::invalid(
                "The request body is empty; expected a JSON object",
                None,
            ));
        }
        let fields = scan::top_level(bytes, MAX_JSON_DEPTH).map_err(|e| {
            if e.too_deep {
                GatewayError::invalid(
                    format!("The request body nests JSON deeper than {MAX_JSON_DEPTH} levels"),
                    None,
                )
            } else {
                GatewayError::invalid(
                    format!(
                        "The request body is not valid JSON: {} at byte {}",
                        e.what, e.at
                    ),
                    None,
                )
            }
        })?;
        Ok(JsonBody { fields })
    }

    /// Every top-level field, in order (a repeated key appears each time).
    pub fn fields(&self) -> impl Iterator<Item = (&str, &'a str)> + '_ {
        self.fields.iter().map(|(k, v)| (k.as_ref(), *v))
    }

    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, v)| *v)
    }

    /// Serialise with `model` replaced by `model` and the gateway's control fields removed.
    pub fn with_model(&self, model: &str, size_hint: usize) -> Bytes {
        self.with_model_and(model, size_hint, None, &[])
    }

    /// Like [`Self::with_model`], also setting top-level field `set.0` to the raw JSON `set.1`
    /// (replacing it when present).
    ///
    /// `defaults` (top-level field, raw JSON) are added when the client did not send that field
    /// (`deployments[].params`).
    pub fn with_model_and(
        &self,
        model: &str,
        size_hint: usize,
        set: Option<(&str, &str)>,
        defaults: &[(String, String)],
    ) -> Bytes {
        let mut out = Vec::with_capacity(size_hint + model.len() + 64);
        let mut set_written = false;
        out.push(b'{');
        let mut model_written = false;
        let mut first = true;
        for (k, v) in &self.fields {
            if CONTROL_FIELDS.contains(&k.as_ref()) {
                continue;
            }
            if k == "model" {
                if model_written {
                    continue;
                }
                model_written = true;
            }
            let replace = set.filter(|(key, _)| k == key);
            if replace.is_some() {
                if set_written {
                    continue;
                }
                set_written = true;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            // Keys came from valid JSON strings; serialising a String cannot fail.
            let _ = serde_json::to_writer(&mut out, k);
            out.push(b':');
            if k == "model" {
                let _ = serde_json::to_writer(&mut out, model);
            } else if let Some((_, raw)) = replace {
                out.extend_from_slice(raw.as_bytes());
            } else {
                out.extend_from_slice(v.as_bytes());
            }
        }
        for (key, raw) in defaults {
            if self.get(key).is_some() || set.is_some_and(|(k, _)| k == key.as_str()) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            let _ = serde_json::to_writer(&mut out, key);
            out.push(b':');
            out.extend_from_slice(raw.as_bytes());
        }
        if let (Some((key, raw)), false) = (set, set_written) {
            if !first {
                out.push(b',');
            }
            let _ = serde_json::to_writer(&mut out, key);
            out.push(b':');
            out.extend_from_slice(raw.as_bytes());
        }
        out.push(b'}');
        Bytes::from(out)
    }
}

/// Refuse a body whose top-level keys are ambiguous: a key given twice (compared after unescaping, so
/// `"mod\u0065l"` is `"model"`) or a case variant of `model` (`"Model"`, `"MODEL"`). Parsers disagree
/// on such bodies (first wins, last wins, case-insensitive matching), so the model the gateway
/// authorised might not be the one an upstream reads; refusing them keeps exactly one `model` in
/// every forwarded body.
fn check_keys(body: &JsonBody<'_>) -> Result<(), GatewayError> {
    let fields = &body.fields;
    if let Some((k, _)) = fields
        .iter()
        .find(|(k, _)| k != "model" && k.eq_ignore_ascii_case("model"))
    {
        return Err(GatewayError::invalid(
            format!("Unknown top-level field `{}`: did you mean `model`? (field names are case-sensitive)", printable_key(k)),
            Some("model"),
        ));
    }
    let duplicate = if fields.len() <= 32 {
        // Small objects (every real request): no allocation.
        fields
            .iter()
            .enumerate()
            .find(|(i, (k, _))| fields[..*i].iter().any(|(seen, _)| seen == k))
            .map(|(_, (k, _))| k)
    } else {
        let mut seen: std::collections::HashSet<&str> =
            std::collections::HashSet::with_capacity(fields.len());
        fields.iter().map(|(k, _)| k).find(|k| !seen.insert(k))
    };
    match duplicate {
        Some(k) => Err(GatewayError::invalid(
            format!(
                "The request body names the field `{}` more than once",
                printable_key(k)
            ),
            (k == "model").then_some("model"),
        )),
        None => Ok(()),
    }
}

/// A client-supplied key for an error message: at most 64 characters, control characters escaped.
fn printable_key(k: &str) -> String {
    k.chars().take(64).flat_map(char::escape_debug).collect()
}

impl<'a> ModelRequest<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<ModelRequest<'a>, GatewayError> {
        let body = JsonBody::parse(bytes)?;
        check_keys(&body)?;
        let model = match body.get("model") {
            None => {
                return Err(GatewayError::invalid(
                    "Missing required parameter: `model`",
                    Some("model"),
                ))
            }
            Some(raw) => match serde_json::from_str::<serde_json::Value>(raw) {
                Ok(serde_json::Value::String(s)) if !s.is_empty() => s,
                Ok(serde_json::Value::String(_)) => {
                    return Err(GatewayError::invalid(
                        "`model` must not be empty",
                        Some("model"),
                    ))
                }
                _ => {
                    return Err(GatewayError::invalid(
                        "`model` must be a string",
                        Some("model"),
                    ))
                }
            },
        };
        let stream = match body.get("stream") {
            None | Some("null") | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(GatewayError::invalid(
                    "`stream` must be a boolean",
                    Some("stream"),
                ))
            }
        };
        let overrides = Overrides::parse(&body)?;
        let has_controls = CONTROL_FIELDS.iter().any(|f| body.get(f).is_some());
        Ok(ModelRequest {
            body,
            model,
            stream,
            overrides,
            has_controls,
        })
    }
}

impl Overrides {
    fn parse(body: &JsonBody) -> Result<Overrides, GatewayError> {
        fn value<T: serde::de::DeserializeOwned>(
            body: &JsonBody,
            key: &'static str,
            what: &str,
        ) -> Result<Option<T>, GatewayError> {
            match body.get(key) {
                None => Ok(None),
                Some("null") => Ok(None),
                Some(raw) => serde_json::from_str(raw).map(Some).map_err(|_| {
                    GatewayError::invalid(format!("`{key}` must be {what}"), Some(key))
                }),
            }
        }
        let request_timeout: Option<f64> = value(body, "request_timeout", "a number of seconds")?;
        let request_timeout = match request_timeout {
            Some(t) if t.is_finite() && t > 0.0 => {
                Some(std::time::Duration::from_secs_f64(t.min(86_400.0)))
            }
            Some(_) => {
                return Err(GatewayError::invalid(
                    "`request_timeout` must be a positive number of seconds",
                    Some("request_timeout"),
                ))
            }
            None => None,
        };
        Ok(Overrides {
            num_retries: value(body, "num_retries", "a non-negative integer")?,
            request_timeout,
            fallbacks: value(body, "fallbacks", "a list of model names")?,
            context_window_fallbacks: value(
                body,
                "context_window_fallbacks",
                "a list of model names",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rewrites() {
        let b = br#"{"messages":[{"role":"user","content":"hi \"model\""}], "model":"gpt-4" ,"stream":true}"#;
        let r = ModelRequest::parse(b).unwrap();
        assert_eq!(r.model, "gpt-4");
        assert!(r.stream);
        let out = r.body.with_model("gpt-4o-2024", b.len());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "gpt-4o-2024");
        assert_eq!(v["messages"][0]["content"], "hi \"model\"");
        assert_eq!(v["stream"], true);
    }

    #[test]
    fn overrides_are_parsed_and_removed() {
        let b = br#"{"model":"m","num_retries":1,"request_timeout":2.5,"fallbacks":["a","b"],"messages":[]}"#;
        let r = ModelRequest::parse(b).unwrap();
        assert!(r.has_controls);
        assert_eq!(r.overrides.num_retries, Some(1));
        assert_eq!(
            r.overrides.request_timeout,
            Some(std::time::Duration::from_millis(2500))
        );
        assert_eq!(
            r.overrides.fallbacks,
            Some(vec!["a".to_string(), "b".to_string()])
        );
        let out: serde_json::Value = serde_json::from_slice(&r.body.with_model("x", 10)).unwrap();
        assert_eq!(out, serde_json::json!({"model": "x", "messages": []}));
        assert!(ModelRequest::parse(br#"{"model":"m","num_retries":-1}"#).is_err());
        assert!(ModelRequest::parse(br#"{"model":"m","fallbacks":"a"}"#).is_err());
        assert!(ModelRequest::parse(br#"{"model":"m","request_timeout":0}"#).is_err());
    }

    #[test]
    fn nesting_limit() {
        let ok = format!(
            "{{\"model\":\"m\",\"x\":{}{}}}",
            "[".repeat(60),
            "]".repeat(60)
        );
        assert!(ModelRequest::parse(ok.as_bytes()).is_ok());
        let deep = format!(
            "{{\"model\":\"m\",\"x\":{}{}}}",
            "[".repeat(70),
            "]".repeat(70)
        );
        assert!(ModelRequest::parse(deep.as_bytes()).is_err());
        // Brackets inside strings do not count.
        let s = format!(
            "{{\"model\":\"m\",\"x\":\"{}\\\"{}\"}}",
            "[".repeat(100),
            "{".repeat(100)
        );
        assert!(ModelRequest::parse(s.as_bytes()).is_ok(), "{s}");
    }

    #[test]
    fn rejects_bad_bodies() {
        assert_eq!(ModelRequest::parse(b"{").err().unwrap().status(), 400);
        assert_eq!(ModelRequest::parse(b"[1]").err().unwrap().status(), 400);
        let e = ModelRequest::parse(br#"{"messages":[]}"#).err().unwrap();
        assert!(e.message().contains("model"));
        let e = ModelRequest::parse(br#"{"model":42}"#).err().unwrap();
        assert!(e.message().contains("must be a string"));
        let e = ModelRequest::parse(br#"{"model":"m","stream":"yes"}"#)
            .err()
            .unwrap();
        assert!(e.message().contains("stream"));
        assert!(ModelRequest::parse(br#"{"model":"m"} trailing"#).is_err());
    }

    #[test]
    fn refuses_ambiguous_keys() {
        for body in [
            &br#"{"model":"forbidden","model":"allowed"}"#[..],
            br#"{"model":"a","mod\u0065l":"b"}"#,
            br#"{"mod\u0065l":"a","messages":[],"model":"b"}"#,
            br#"{"model":"a","Model":"b"}"#,
            br#"{"MODEL":"b","model":"a"}"#,
            br#"{"model":"a","stream":false,"stream":true}"#,
        ] {
            let e = ModelRequest::parse(body).err().expect("refused");
            assert_eq!(e.status(), 400, "{}", String::from_utf8_lossy(body));
        }
        // Many fields take the hashed path.
        let mut many: String = (0..100).map(|i| format!("\"f{i}\":1,")).collect();
        many.push_str("\"model\":\"a\",\"f7\":2}");
        let many = format!("{{{many}");
        assert!(ModelRequest::parse(many.as_bytes()).is_err());
        // One escaped `model` is that model.
        let r = ModelRequest::parse(br#"{"mod\u0065l":"m","messages":[]}"#).unwrap();
        assert_eq!(r.model, "m");
    }
}
