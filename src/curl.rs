//! `--detailed_debug`: every upstream request logged as a `curl` command a person can
//! paste, with credentials masked (`Authorization: Bearer sk-qnWG****`).
//!
//! The log target [`TARGET`] is at debug level only with `--detailed_debug` (`--debug` alone leaves
//! it off: these lines carry prompts). The request path calls [`log_request`] (or checks
//! [`enabled`] and formats with [`curl_command`]) just before it sends a request upstream.

/// The log target of the curl lines.
pub const TARGET: &str = "llmproxy::curl";

/// Bodies longer than this are cut in the log line (the command then says how much is missing).
const MAX_BODY: usize = 64 * 1024;

/// Whether upstream requests are being logged (`--detailed_debug`).
pub fn enabled() -> bool {
    log::log_enabled!(target: TARGET, log::Level::Debug)
}

/// Log one upstream request as a curl command, when [`enabled`].
pub fn log_request(method: &http::Method, url: &str, headers: &http::HeaderMap, body: &[u8]) {
    if enabled() {
        log::debug!(
            target: TARGET,
            "request sent upstream:\n{}",
            curl_command(method, url, headers, body)
        );
    }
}

/// The request as a `curl` command, credentials masked.
pub fn curl_command(
    method: &http::Method,
    url: &str,
    headers: &http::HeaderMap,
    body: &[u8],
) -> String {
    let mut out = format!("curl -X {method} \\\n{} \\\n", quote(&mask_url(url)));
    let hs: Vec<String> = headers
        .iter()
        .map(|(name, value)| {
            let v = String::from_utf8_lossy(value.as_bytes());
            let v = if sensitive(name.as_str()) {
                mask(&v)
            } else {
                v.into_owned()
            };
            format!("-H {}", quote(&format!("{name}: {v}")))
        })
        .collect();
    if !hs.is_empty() {
        out.push_str(&hs.join(" "));
        out.push_str(" \\\n");
    }
    let shown = &body[..body.len().min(MAX_BODY)];
    match std::str::from_utf8(shown) {
        Ok(text) => out.push_str(&format!("-d {}", quote(text))),
        Err(_) => out.push_str(&format!("--data-binary '<{} bytes, not text>'", body.len())),
    }
    if body.len() > MAX_BODY && std::str::from_utf8(shown).is_ok() {
        out.push_str(&format!(
            " # body cut: {} more bytes",
            body.len() - MAX_BODY
        ));
    }
    out
}

/// Headers that carry credentials.
fn sensitive(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization"
            | "proxy-authorization"
            | "api-key"
            | "x-api-key"
            | "x-goog-api-key"
            | "cookie"
    ) || n.contains("token")
        || n.contains("secret")
        || n.contains("key")
}

/// A credential with all but its first characters hidden: an auth scheme (`Bearer`, `Basic`,
/// `AWS4-HMAC-SHA256`) and an `sk-` prefix are kept, then the first 4 characters of the secret
/// (none of a secret shorter than 8), then `****`.
pub fn mask(value: &str) -> String {
    let (scheme, secret) = match value.split_once(' ') {
        Some((s, rest))
            if !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !rest.trim().is_empty() =>
        {
            (format!("{s} "), rest.trim_start())
        }
        _ => (String::new(), value),
    };
    let (prefix, rest) = match secret.strip_prefix("sk-") {
        Some(r) => ("sk-", r),
        None => ("", secret),
    };
    let keep: String = if rest.chars().count() >= 8 {
        rest.chars().take(4).collect()
    } else {
        String::new()
    };
    format!("{scheme}{prefix}{keep}****")
}

/// Query parameters that carry credentials (`?key=...`) masked.
fn mask_url(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if sensitive(k) || k.to_ascii_lowercase().contains("sig") => {
                format!("{k}={}", mask(v))
            }
            _ => kv.to_string(),
        })
        .collect();
    format!("{base}?{}", parts.join("&"))
}

/// Single-quoted for a POSIX shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_credentials_and_keeps_the_rest() {
        let mut h = http::HeaderMap::new();
        h.insert("content-type", "application/json".parse().unwrap());
        h.insert(
            "authorization",
            "Bearer sk-qnWGUIW9abcdefghijklmnop".parse().unwrap(),
        );
        h.insert("api-key", "0123456789abcdef".parse().unwrap());
        h.insert("x-goog-api-key", "AIzaSyD-secret-value".parse().unwrap());
        h.insert("x-amz-security-token", "FwoGZXIvYXdzEBYaD".parse().unwrap());
        h.insert("x-request-id", "req-1".parse().unwrap());
        let body =
            br#"{"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "it's"}]}"#;
        let cmd = curl_command(
            &http::Method::POST,
            "https://api.openai.com/v1/chat/completions",
            &h,
            body,
        );
        assert!(
            cmd.starts_with("curl -X POST \\\n'https://api.openai.com/v1/chat/completions' \\\n"),
            "{cmd}"
        );
        assert!(
            cmd.contains("-H 'authorization: Bearer sk-qnWG****'"),
            "{cmd}"
        );
        assert!(cmd.contains("-H 'api-key: 0123****'"), "{cmd}");
        assert!(cmd.contains("-H 'x-goog-api-key: AIza****'"), "{cmd}");
        assert!(cmd.contains("-H 'x-amz-security-token: FwoG****'"), "{cmd}");
        assert!(cmd.contains("-H 'content-type: application/json'"), "{cmd}");
        assert!(cmd.contains("-H 'x-request-id: req-1'"), "{cmd}");
        assert!(cmd.contains(r#""content": "it'\''s"}]}'"#), "{cmd}");
        for secret in ["UIW9abc", "456789", "SyD-secret", "XIvYXdz"] {
            assert!(!cmd.contains(secret), "{secret} leaked: {cmd}");
        }
    }

    #[test]
    fn masks_short_secrets_whole_and_query_keys() {
        assert_eq!(mask("sk-1234"), "sk-****");
        assert_eq!(mask("Basic dXNlcjpwYXNzd29yZA=="), "Basic dXNl****");
        assert_eq!(mask("secret"), "****");
        assert_eq!(
            mask_url("https://x/v1beta/models/g:generateContent?key=AIzaSyD-long-key&alt=sse"),
            "https://x/v1beta/models/g:generateContent?key=AIza****&alt=sse"
        );
    }
}
