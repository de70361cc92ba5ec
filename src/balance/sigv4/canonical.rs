//! The SigV4 canonical request of the requests the gateway sends every time (Bedrock's: no query, a
//! path of unreserved characters and escapes, a few header values with no spaces to fold), written
//! straight into one buffer; and the day's signing key, derived once per day and credentials instead
//! of once per request.
//!
//! **Why.** `aws_sigv4::http_request::sign` is general (presigning, queries, path normalisation,
//! header folding, every setting): per request it builds a header map, sorts, percent-encodes and
//! formats through `Display`, and derives the signing key with four HMACs. That was 11% of the
//! gateway's CPU on a Bedrock chat request (`perf record`, one worker thread); written here, the
//! gateway's CPU per Bedrock chat request went from 118 to 98 µs (`loadtest/results/perf.md`).
//!
//! **What stays the crate's.** The cryptography: the signing key is
//! `aws_sigv4::sign::v4::generate_signing_key`, the signature `aws_sigv4::sign::v4::calculate_signature`
//! (HMAC-SHA256), the hashes `sha2`'s. Only the canonical text is written here, and only for the
//! shape above: anything else (a query string, a path to normalise, a header value with spaces to
//! trim or fold, a repeated header) returns `None` and the crate signs it. A test signs thousands of
//! generated requests both ways and requires byte-identical headers, so the crate is this code's
//! oracle; the mock upstream verifies every signature with its own implementation.

use arc_swap::ArcSwapOption;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// What the signature adds to the request.
#[derive(Debug, PartialEq, Eq)]
pub struct Signed {
    pub authorization: String,
    /// `x-amz-date`: `YYYYMMDDTHHMMSSZ`.
    pub date: String,
}

/// The signing key of one day, region, service and secret.
struct DayKey {
    day: [u8; 8],
    secret: String,
    key: [u8; 32],
}

/// The day's signing key of one upstream (its region and service are fixed).
#[derive(Default)]
pub struct KeyCache(ArcSwapOption<DayKey>);

impl KeyCache {
    /// The signing key for `secret` on `day` (`YYYYMMDD`), derived by `aws-sigv4` when the day or
    /// the secret changed.
    fn key(
        &self,
        secret: &str,
        day: [u8; 8],
        now: SystemTime,
        region: &str,
        service: &str,
    ) -> Option<[u8; 32]> {
        if let Some(k) = self.0.load().as_ref() {
            if k.day == day && k.secret == secret {
                return Some(k.key);
            }
        }
        let derived = aws_sigv4::sign::v4::generate_signing_key(secret, now, region, service);
        // An HMAC-SHA256 tag: 32 bytes (anything else leaves the request to the general signer).
        let key: [u8; 32] = derived.as_ref().try_into().ok()?;
        self.0.store(Some(Arc::new(DayKey {
            day,
            secret: secret.to_string(),
            key,
        })));
        Some(key)
    }
}

/// One request to sign.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent (percent-encoded once), no query.
    pub path: &'a str,
    /// The headers to sign (`host`, `content-type`, `x-amz-*`), lower-case names, any order.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// The identity and scope to sign with.
pub struct Scope<'a> {
    pub access_key_id: &'a str,
    pub secret: &'a str,
    pub session_token: Option<&'a str>,
    pub region: &'a str,
    pub service: &'a str,
}

/// Sign `req` at `now`, or `None` when its shape needs the general signer.
pub fn sign(
    keys: &KeyCache,
    scope: &Scope<'_>,
    req: &Request<'_>,
    now: SystemTime,
) -> Option<Signed> {
    if !simple_path(req.path) {
        return None;
    }
    let secs = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    let date = amz_date(secs)?;
    let day: [u8; 8] = date.as_bytes().get(..8)?.try_into().ok()?;

    // Signed headers, sorted by name: the request's, x-amz-date and the session token.
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(req.headers.len() + 2);
    for &(n, v) in req.headers {
        if n == "x-amz-date" || n == "x-amz-security-token" || !simple_value(v) {
            return None;
        }
        headers.push((n, v));
    }
    headers.push(("x-amz-date", &date));
    if let Some(t) = scope.session_token {
        if !simple_value(t) {
            return None;
        }
        headers.push(("x-amz-security-token", t));
    }
    headers.sort_unstable_by(|a, b| a.0.cmp(b.0));
    if headers.windows(2).any(|w| w[0].0 == w[1].0)
        || !headers.iter().any(|(n, _)| *n == "host")
        || headers.iter().any(|(n, _)| !simple_name(n))
    {
        return None;
    }
    let mut signed_names = String::with_capacity(64);
    for (i, (n, _)) in headers.iter().enumerate() {
        if i > 0 {
            signed_names.push(';');
        }
        signed_names.push_str(n);
    }

    // The canonical request, hashed as it is written.
    let mut creq = String::with_capacity(256 + req.path.len());
    creq.push_str(req.method);
    creq.push('\n');
    for c in req.path.chars() {
        // Double encoding (every service but S3): the path as sent is encoded again.
        if c == '%' {
            creq.push_str("%25");
        } else {
            creq.push(c);
        }
    }
    creq.push_str("\n\n");
    for (n, v) in &headers {
        creq.push_str(n);
        creq.push(':');
        creq.push_str(v);
        creq.push('\n');
    }
    creq.push('\n');
    creq.push_str(&signed_names);
    creq.push('\n');
    push_hex(&mut creq, &Sha256::digest(req.body));

    let scope_text = format!(
        "{}/{}/{}/aws4_request",
        &date[..8],
        scope.region,
        scope.service
    );
    let mut to_sign = String::with_capacity(160);
    to_sign.push_str("AWS4-HMAC-SHA256\n");
    to_sign.push_str(&date);
    to_sign.push('\n');
    to_sign.push_str(&scope_text);
    to_sign.push('\n');
    push_hex(&mut to_sign, &Sha256::digest(creq.as_bytes()));

    let key = keys.key(scope.secret, day, now, scope.region, scope.service)?;
    let signature = aws_sigv4::sign::v4::calculate_signature(key, to_sign.as_bytes());
    let mut authorization = String::with_capacity(160);
    let _ = write!(
        authorization,
        "AWS4-HMAC-SHA256 Credential={}/{scope_text}, SignedHeaders={signed_names}, Signature={signature}",
        scope.access_key_id
    );
    Some(Signed {
        authorization,
        date,
    })
}

/// A path the canonical form only re-encodes: absolute, unreserved characters, `/` and escapes, no
/// dot segment or empty segment to normalise.
fn simple_path(path: &str) -> bool {
    path.starts_with('/')
        && path.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/' | b'%')
        })
        && path
            .split('/')
            .skip(1)
            .enumerate()
            .all(|(i, seg)| seg != "." && seg != ".." && (!seg.is_empty() || i == 0 && path == "/"))
}

/// A header value the canonical form keeps as it is (no space to trim or fold).
fn simple_value(v: &str) -> bool {
    !v.starts_with(' ') && !v.ends_with(' ') && !v.contains("  ")
}

/// A header name as the canonical form writes it (lower case).
fn simple_name(n: &str) -> bool {
    !n.is_empty() && !n.bytes().any(|b| b.is_ascii_uppercase())
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
}

/// `YYYYMMDDTHHMMSSZ` (UTC) of a Unix time, `None` past year 9999.
fn amz_date(secs: u64) -> Option<String> {
    let days = i64::try_from(secs / 86_400).ok()?;
    let rem = secs % 86_400;
    let (y, m, d) = crate::keys::units::civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return None;
    }
    Some(format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    ))
}
