//! AWS Signature Version 4, verified the way an AWS service does it: the mock recomputes the
//! signature of the request it received and compares. Written from AWS's published algorithm
//! ("Create a signed AWS API request" and "Elements of an AWS API request signature" in the IAM
//! user guide, and the Signature Version 4 test suite of the AWS General Reference), with the
//! `hmac` and `sha2` crates — deliberately not AWS's own signing crates, so the oracle does not
//! share an implementation with a client that uses them.
//!
//! # The algorithm
//!
//! 1. The canonical request:
//!    `METHOD \n canonical URI \n canonical query \n canonical headers \n signed headers \n
//!    hex(sha256(payload))`.
//!    * canonical URI: the path as received (still percent-encoded), with `.` / `..` segments
//!      removed, then URI-encoded once more byte by byte (everything but `A-Z a-z 0-9 - _ . ~`
//!      and `/` becomes `%XX`, upper-case hex). Every AWS service but S3 encodes twice this way,
//!      so a model id `a:0` sent as `/model/a%3A0/converse` is signed as
//!      `/model/a%253A0/converse`. An empty path is `/`.
//!    * canonical query: each `name=value` pair percent-decoded and re-encoded as above (`=`
//!      added to a bare name), sorted by name, then value, joined with `&`.
//!    * canonical headers: each signed header, lower-cased, `name:value\n`, sorted by name; the
//!      value trimmed with inner runs of spaces collapsed to one, repeated headers joined with
//!      `,`. The signed headers are the names joined with `;`; `host` must be one of them.
//!    * the payload hash is of the body received; an `x-amz-content-sha256` header, if present,
//!      must equal it.
//! 2. The string to sign: `AWS4-HMAC-SHA256 \n x-amz-date \n scope \n hex(sha256(canonical
//!    request))`, scope = `date/region/service/aws4_request`.
//! 3. The signing key: `HMAC("AWS4" + secret, date)`, then HMAC with the region, the service and
//!    `aws4_request` in turn.
//! 4. The signature: `hex(HMAC(signing key, string to sign))`, compared with the one in
//!    `Authorization: AWS4-HMAC-SHA256 Credential=KEY/scope, SignedHeaders=..., Signature=...`.
//!
//! Before that, as AWS does: the `x-amz-date` must be within 5 minutes of the mock's clock, the
//! scope's date must be its date, the region and service must be the mock's, the access key must
//! be the configured one, and `x-amz-security-token` must equal the configured session token
//! (and be absent when none is configured).

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// How far `x-amz-date` may be from the mock's clock.
const MAX_SKEW_SECS: u64 = 300;

/// What the mock accepts.
pub(crate) struct Credentials {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) session_token: Option<String>,
    pub(crate) region: String,
    /// The signing name of the service (`bedrock` for both Bedrock endpoints).
    pub(crate) service: String,
}

/// The request as received.
pub(crate) struct Signed<'a> {
    pub(crate) method: &'a str,
    /// The path as it was on the request line (percent-encoding untouched).
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: &'a [u8],
}

/// Why a request was refused: the AWS error type, its HTTP status and message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Refusal {
    pub(crate) error_type: &'static str,
    pub(crate) status: u16,
    pub(crate) message: String,
}

/// The verifier's findings, for the answer and for the request recording.
#[derive(Debug, Clone)]
pub(crate) struct Verdict {
    pub(crate) refusal: Option<Refusal>,
    pub(crate) access_key_id: Option<String>,
    pub(crate) scope: Option<String>,
    pub(crate) signed_headers: Option<String>,
    pub(crate) canonical_request: Option<String>,
    pub(crate) string_to_sign: Option<String>,
}

impl Verdict {
    fn refused(error_type: &'static str, status: u16, message: impl Into<String>) -> Verdict {
        Verdict {
            refusal: Some(Refusal {
                error_type,
                status,
                message: message.into(),
            }),
            access_key_id: None,
            scope: None,
            signed_headers: None,
            canonical_request: None,
            string_to_sign: None,
        }
    }

    /// `{"scheme":"sigv4","ok":..,"error_type":..,"message":..,"access_key_id":..,"scope":..,
    /// "signed_headers":..,"canonical_request":..,"string_to_sign":..}`.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "scheme": "sigv4",
            "ok": self.refusal.is_none(),
            "error_type": self.refusal.as_ref().map(|r| r.error_type),
            "message": self.refusal.as_ref().map(|r| r.message.clone()),
            "access_key_id": self.access_key_id,
            "scope": self.scope,
            "signed_headers": self.signed_headers,
            "canonical_request": self.canonical_request,
            "string_to_sign": self.string_to_sign,
        })
    }
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, PartialEq)]
struct Authorization {
    access_key_id: String,
    date: String,
    region: String,
    service: String,
    terminator: String,
    signed_headers: Vec<String>,
    signature: String,
}

fn parse_authorization(value: &str) -> Result<Authorization, String> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256").ok_or_else(|| {
        format!("Authorization header requires the 'AWS4-HMAC-SHA256' algorithm, not '{value}'.")
    })?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        } else if !part.is_empty() {
            return Err(format!(
                "Authorization header has an unexpected element '{part}'."
            ));
        }
    }
    let missing = |what: &str| {
        format!("Authorization header requires '{what}' parameter. Authorization={value}")
    };
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [key, date, region, service, terminator] = scope[..] else {
        return Err(format!(
            "Credential should be of the form KEY/date/region/service/aws4_request, not '{credential}'."
        ));
    };
    Ok(Authorization {
        access_key_id: key.to_owned(),
        date: date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        terminator: terminator.to_owned(),
        signed_headers: signed.split(';').map(str::to_owned).collect(),
        signature: signature.to_owned(),
    })
}

/// AWS's URI encoding of one byte string: unreserved characters kept, everything else `%XX`;
/// `/` kept only when `keep_slash`.
fn uri_encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `%XX` escapes decoded (anything else, `+` included, kept as it is).
pub(crate) fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let hexval = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hexval(b[i + 1]), hexval(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The canonical URI of a (still encoded) request path: dot segments removed, then encoded again.
pub(crate) fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let trailing = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    for seg in path.split('/').skip(1) {
        match seg {
            "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    // A trailing empty segment from `a/` is kept by the split; one from `a/.` or `a/..` is not.
    if trailing && segments.last().is_some_and(|s| !s.is_empty()) {
        segments.push("");
    }
    let joined = format!("/{}", segments.join("/"));
    uri_encode(joined.as_bytes(), true)
}

/// The canonical query string.
pub(crate) fn canonical_query(query: Option<&str>) -> String {
    let mut pairs: Vec<(String, String)> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), false),
                uri_encode(&percent_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A header value as signed: trimmed, inner runs of spaces collapsed.
fn canonical_value(v: &[u8]) -> String {
    String::from_utf8_lossy(v)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The canonical headers block (each line ending in `\n`), or the first signed header missing.
fn canonical_headers(headers: &HeaderMap, signed: &[String]) -> Result<String, String> {
    let mut out = String::new();
    for name in signed {
        let values: Vec<String> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| canonical_value(v.as_bytes()))
            .collect();
        if values.is_empty() {
            return Err(name.clone());
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// The signature of `string_to_sign` with the key derived for this scope.
pub(crate) fn signature(
    secret: &str,
    date: &str,
    region: &str,
    service: &str,
    string_to_sign: &str,
) -> String {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    hex(&hmac(&k_signing, string_to_sign.as_bytes()))
}

/// The canonical request of `req` over these signed headers (`Err`: a signed header missing).
pub(crate) fn canonical_request(
    req: &Signed<'_>,
    signed: &[String],
    payload_hash: &str,
) -> Result<String, String> {
    Ok(format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        canonical_uri(req.path),
        canonical_query(req.query),
        canonical_headers(req.headers, signed)?,
        signed.join(";"),
        payload_hash
    ))
}

/// `YYYYMMDDTHHMMSSZ` as seconds since the epoch.
fn parse_amz_date(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// Seconds since the epoch as `YYYYMMDDTHHMMSSZ`.
pub(crate) fn format_amz_date(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Verify a request's SigV4 signature against `creds` at time `now`.
pub(crate) fn verify(creds: &Credentials, req: &Signed<'_>, now: SystemTime) -> Verdict {
    let Some(auth) = req.headers.get("authorization") else {
        return Verdict::refused(
            "MissingAuthenticationTokenException",
            403,
            "Missing Authentication Token",
        );
    };
    let auth = String::from_utf8_lossy(auth.as_bytes()).into_owned();
    let a = match parse_authorization(&auth) {
        Ok(a) => a,
        Err(m) => return Verdict::refused("IncompleteSignatureException", 400, m),
    };
    let mut v = Verdict::refused("", 0, "");
    v.refusal = None;
    v.access_key_id = Some(a.access_key_id.clone());
    v.scope = Some(format!(
        "{}/{}/{}/{}",
        a.date, a.region, a.service, a.terminator
    ));
    v.signed_headers = Some(a.signed_headers.join(";"));
    let refuse = |mut v: Verdict, t: &'static str, status: u16, m: String| {
        v.refusal = Some(Refusal {
            error_type: t,
            status,
            message: m,
        });
        v
    };
    const INVALID_TOKEN: &str = "The security token included in the request is invalid.";
    if a.access_key_id != creds.access_key_id {
        return refuse(
            v,
            "UnrecognizedClientException",
            403,
            INVALID_TOKEN.to_owned(),
        );
    }
    let token = req
        .headers
        .get("x-amz-security-token")
        .map(|t| String::from_utf8_lossy(t.as_bytes()).into_owned());
    if token != creds.session_token {
        return refuse(
            v,
            "UnrecognizedClientException",
            403,
            INVALID_TOKEN.to_owned(),
        );
    }
    let Some(amz_date) = req
        .headers
        .get("x-amz-date")
        .map(|d| String::from_utf8_lossy(d.as_bytes()).into_owned())
    else {
        return refuse(
            v,
            "IncompleteSignatureException",
            400,
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
                .to_owned(),
        );
    };
    let Some(signed_at) = parse_amz_date(&amz_date) else {
        return refuse(
            v,
            "IncompleteSignatureException",
            400,
            format!("Date must be in ISO-8601 'basic format'. Got '{amz_date}'."),
        );
    };
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if signed_at + MAX_SKEW_SECS < now {
        return refuse(
            v,
            "InvalidSignatureException",
            403,
            format!(
                "Signature expired: {amz_date} is now earlier than {} ({} - 5 min.)",
                format_amz_date(now - MAX_SKEW_SECS),
                format_amz_date(now)
            ),
        );
    }
    if signed_at > now + MAX_SKEW_SECS {
        return refuse(
            v,
            "InvalidSignatureException",
            403,
            format!(
                "Signature not yet current: {amz_date} is still later than {} ({} + 5 min.)",
                format_amz_date(now + MAX_SKEW_SECS),
                format_amz_date(now)
            ),
        );
    }
    if !amz_date.starts_with(&a.date) || a.date.len() != 8 {
        return refuse(
            v,
            "InvalidSignatureException",
            403,
            format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{amz_date}'.",
                a.date,
                &amz_date[..8]
            ),
        );
    }
    if a.region != creds.region {
        return refuse(
            v,
            "InvalidSignatureException",
            403,
            format!(
                "Credential should be scoped to a valid region, not '{}'. ",
                a.region
            ),
        );
    }
    if a.service != creds.service {
        return refuse(
            v,
            "InvalidSignatureException",
            403,
            format!(
                "Credential should be scoped to correct service: '{}'. ",
                creds.service
            ),
        );
    }
    if a.terminator != "aws4_request" {
        return refuse(
            v,
            "InvalidSignatureException",
            403,
            format!(
                "Credential should be scoped with a valid terminator: 'aws4_request', not '{}'. ",
                a.terminator
            ),
        );
    }
    let mut sorted = a.signed_headers.clone();
    sorted.sort();
    if sorted != a.signed_headers
        || a.signed_headers
            .iter()
            .any(|h| h.is_empty() || *h != h.to_ascii_lowercase())
    {
        return refuse(
            v,
            "InvalidSignatureException",
            403,
            "SignedHeaders must be lower-case header names, sorted and separated by ';'."
                .to_owned(),
        );
    }
    if !a.signed_headers.iter().any(|h| h == "host") {
        return refuse(
            v,
            "InvalidSignatureException",
            403,
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".to_owned(),
        );
    }
    let payload_hash = sha256_hex(req.body);
    if let Some(claimed) = req.headers.get("x-amz-content-sha256") {
        let claimed = String::from_utf8_lossy(claimed.as_bytes());
        if claimed != payload_hash {
            return refuse(
                v,
                "InvalidSignatureException",
                403,
                format!(
                    "The provided 'x-amz-content-sha256' header does not match what was computed. Computed: {payload_hash}, provided: {claimed}."
                ),
            );
        }
    }
    let creq = match canonical_request(req, &a.signed_headers, &payload_hash) {
        Ok(c) => c,
        Err(missing) => {
            return refuse(
                v,
                "InvalidSignatureException",
                403,
                format!("Header '{missing}' is named in SignedHeaders but not in the request."),
            )
        }
    };
    let sts = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{}/{}/{}/aws4_request\n{}",
        a.date,
        a.region,
        a.service,
        sha256_hex(creq.as_bytes())
    );
    let expected = signature(
        &creds.secret_access_key,
        &a.date,
        &a.region,
        &a.service,
        &sts,
    );
    v.canonical_request = Some(creq.clone());
    v.string_to_sign = Some(sts.clone());
    if expected != a.signature {
        return refuse(
            v,
            "InvalidSignatureException",
            403,
            format!(
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.\n\nThe Canonical String for this request should have been\n'{creq}'\n\nThe String-to-Sign should have been\n'{sts}'\n"
            ),
        );
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HeaderName, HeaderValue};
    use std::time::Duration;

    const KEY: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const AMZ_DATE: &str = "20150830T123600Z";
    const EMPTY_SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn suite_creds() -> Credentials {
        Credentials {
            access_key_id: KEY.to_owned(),
            secret_access_key: SECRET.to_owned(),
            session_token: None,
            region: "us-east-1".to_owned(),
            service: "service".to_owned(),
        }
    }

    fn at(amz: &str) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(parse_amz_date(amz).unwrap())
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// One case of AWS's Signature Version 4 test suite: the request, and the `Authorization`
    /// header (signed headers and signature) the suite gives for it.
    struct Case {
        name: &'static str,
        method: &'static str,
        path: &'static str,
        query: Option<&'static str>,
        extra: &'static [(&'static str, &'static str)],
        body: &'static str,
        signed: &'static str,
        signature: &'static str,
    }

    fn suite() -> Vec<Case> {
        let case = |name, method, path, query, signed, signature| Case {
            name,
            method,
            path,
            query,
            extra: &[],
            body: "",
            signed,
            signature,
        };
        vec![
            case("get-vanilla", "GET", "/", None, "host;x-amz-date",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
            case("get-vanilla-query-order-key-case", "GET", "/", Some("Param2=value2&Param1=value1"),
                "host;x-amz-date",
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
            case("get-vanilla-query-unreserved", "GET", "/",
                Some("-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"),
                "host;x-amz-date",
                "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197"),
            case("get-vanilla-utf8-query", "GET", "/", Some("%E1%88%B4=bar"), "host;x-amz-date",
                "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"),
            case("get-unreserved", "GET",
                "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", None,
                "host;x-amz-date",
                "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"),
            case("get-utf8", "GET", "/\u{1234}", None, "host;x-amz-date",
                "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"),
            case("get-relative-relative", "GET", "/example1/example2/../..", None,
                "host;x-amz-date",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
            case("get-slash-dot-slash", "GET", "/./", None, "host;x-amz-date",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
            case("get-slash-pointless-dot", "GET", "/./example", None, "host;x-amz-date",
                "ef75d96142cf21edca26f06005da7988e4f8dc83a165a80865db7089db637ec5"),
            case("post-vanilla", "POST", "/", None, "host;x-amz-date",
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
            case("post-vanilla-query", "POST", "/", Some("Param1=value1"), "host;x-amz-date",
                "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"),
            Case {
                extra: &[("My-Header1", "value4"), ("My-Header1", "value1"), ("My-Header1", "value3"), ("My-Header1", "value2")],
                ..case("get-header-value-order", "GET", "/", None, "host;my-header1;x-amz-date",
                    "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01")
            },
            Case {
                extra: &[("My-Header1", " value1"), ("My-Header2", " \"a   b   c\"")],
                ..case("get-header-value-trim", "GET", "/", None,
                    "host;my-header1;my-header2;x-amz-date",
                    "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736")
            },
            Case {
                extra: &[("My-Header1", "VALUE1")],
                ..case("post-header-value-case", "POST", "/", None, "host;my-header1;x-amz-date",
                    "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d")
            },
            Case {
                extra: &[("Content-Type", "application/x-www-form-urlencoded")],
                body: "Param1=value1",
                ..case("post-x-www-form-urlencoded", "POST", "/", None,
                    "content-type;host;x-amz-date",
                    "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a")
            },
        ]
    }

    fn request_headers(c: &Case) -> HeaderMap {
        let mut pairs = vec![("Host", "example.amazonaws.com"), ("X-Amz-Date", AMZ_DATE)];
        pairs.extend_from_slice(c.extra);
        let mut h = headers(&pairs);
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={KEY}/20150830/us-east-1/service/aws4_request, SignedHeaders={}, Signature={}",
            c.signed, c.signature
        );
        h.insert("authorization", HeaderValue::from_str(&auth).unwrap());
        h
    }

    #[test]
    fn aws_test_suite_signatures_verify() {
        for c in suite() {
            let h = request_headers(&c);
            let req = Signed {
                method: c.method,
                path: c.path,
                query: c.query,
                headers: &h,
                body: c.body.as_bytes(),
            };
            let v = verify(&suite_creds(), &req, at(AMZ_DATE));
            assert_eq!(v.refusal, None, "{}: {:?}", c.name, v.canonical_request);
        }
    }

    #[test]
    fn aws_test_suite_intermediate_values() {
        // get-vanilla: the suite's canonical request and string to sign.
        let h = headers(&[("host", "example.amazonaws.com"), ("x-amz-date", AMZ_DATE)]);
        let req = Signed {
            method: "GET",
            path: "/",
            query: None,
            headers: &h,
            body: b"",
        };
        let signed = ["host".to_owned(), "x-amz-date".to_owned()];
        let creq = canonical_request(&req, &signed, EMPTY_SHA).unwrap();
        assert_eq!(
            creq,
            format!("GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:{AMZ_DATE}\n\nhost;x-amz-date\n{EMPTY_SHA}")
        );
        assert_eq!(
            sha256_hex(creq.as_bytes()),
            "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
        // get-utf8's canonical URI.
        assert_eq!(canonical_uri("/\u{1234}"), "/%E1%88%B4");
        // Non-S3 services encode the received (already encoded) path once more.
        assert_eq!(
            canonical_uri("/model/anthropic.claude-v2%3A1/converse"),
            "/model/anthropic.claude-v2%253A1/converse"
        );
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/a/b/../c/./d/"), "/a/c/d/");
        assert_eq!(
            canonical_query(Some("b=2&a=%20x&a=1&c")),
            "a=%20x&a=1&b=2&c="
        );
        assert_eq!(format_amz_date(parse_amz_date(AMZ_DATE).unwrap()), AMZ_DATE);
        assert_eq!(parse_amz_date("20150830T123600"), None);
    }

    #[test]
    fn session_token_must_match() {
        // The suite's post-sts-header-before: the token is signed.
        let token = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";
        let mut h = headers(&[
            ("host", "example.amazonaws.com"),
            ("x-amz-date", AMZ_DATE),
            ("x-amz-security-token", token),
        ]);
        h.insert("authorization", HeaderValue::from_str(&format!("AWS4-HMAC-SHA256 Credential={KEY}/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead")).unwrap());
        let req = Signed {
            method: "POST",
            path: "/",
            query: None,
            headers: &h,
            body: b"",
        };
        let mut creds = suite_creds();
        creds.session_token = Some(token.to_owned());
        assert_eq!(verify(&creds, &req, at(AMZ_DATE)).refusal, None);
        creds.session_token = Some("other".to_owned());
        let r = verify(&creds, &req, at(AMZ_DATE)).refusal.unwrap();
        assert_eq!(r.error_type, "UnrecognizedClientException");
        creds.session_token = None;
        assert!(verify(&creds, &req, at(AMZ_DATE)).refusal.is_some());
    }

    /// A Bedrock request signed step by step here, as a client following the algorithm would.
    fn hand_signed(body: &str, amz_date: &str) -> HeaderMap {
        let secret = "mock-secret";
        let host = "bedrock-runtime.eu-west-1.amazonaws.com";
        let creq = format!(
            "POST\n/model/amazon.nova-lite-v1%253A0/converse\n\ncontent-type:application/json\nhost:{host}\nx-amz-date:{amz_date}\n\ncontent-type;host;x-amz-date\n{}",
            hex(&Sha256::digest(body.as_bytes()))
        );
        let scope = format!("{}/eu-west-1/bedrock/aws4_request", &amz_date[..8]);
        let sts = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(&Sha256::digest(creq.as_bytes()))
        );
        let mut key = format!("AWS4{secret}").into_bytes();
        for part in [&amz_date[..8], "eu-west-1", "bedrock", "aws4_request"] {
            let mut m = Hmac::<Sha256>::new_from_slice(&key).unwrap();
            m.update(part.as_bytes());
            key = m.finalize().into_bytes().to_vec();
        }
        let mut m = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        m.update(sts.as_bytes());
        let sig = hex(&m.finalize().into_bytes());
        let mut h = headers(&[
            ("content-type", "application/json"),
            ("host", host),
            ("x-amz-date", amz_date),
        ]);
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!(
                "AWS4-HMAC-SHA256 Credential=AKIAMOCK/{scope}, SignedHeaders=content-type;host;x-amz-date, Signature={sig}"
            ))
            .unwrap(),
        );
        h
    }

    fn bedrock_creds() -> Credentials {
        Credentials {
            access_key_id: "AKIAMOCK".to_owned(),
            secret_access_key: "mock-secret".to_owned(),
            session_token: None,
            region: "eu-west-1".to_owned(),
            service: "bedrock".to_owned(),
        }
    }

    #[test]
    fn hand_signed_request_verifies_and_tampering_does_not() {
        let body = r#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#;
        let date = "20240102T030405Z";
        let h = hand_signed(body, date);
        let req = |h: &'static HeaderMap, body: &'static str, path: &'static str| Signed {
            method: "POST",
            path,
            query: None,
            headers: h,
            body: body.as_bytes(),
        };
        let h: &'static HeaderMap = Box::leak(Box::new(h));
        let path = "/model/amazon.nova-lite-v1%3A0/converse";
        let v = verify(&bedrock_creds(), &req(h, body, path), at(date));
        assert_eq!(v.refusal, None);
        assert_eq!(
            v.signed_headers.as_deref(),
            Some("content-type;host;x-amz-date")
        );
        // Another body, path or clock: refused with AWS's error types.
        let other = verify(&bedrock_creds(), &req(h, "{}", path), at(date))
            .refusal
            .unwrap();
        assert_eq!(
            (other.error_type, other.status),
            ("InvalidSignatureException", 403)
        );
        assert!(other
            .message
            .starts_with("The request signature we calculated does not match"));
        assert!(other.message.contains("%253A0"), "{}", other.message);
        let unencoded = verify(
            &bedrock_creds(),
            &req(h, body, "/model/amazon.nova-lite-v1:0/converse"),
            at(date),
        );
        assert_eq!(
            unencoded.refusal.unwrap().error_type,
            "InvalidSignatureException"
        );
        let late = verify(
            &bedrock_creds(),
            &req(h, body, path),
            at(date) + Duration::from_secs(301),
        );
        assert!(late.refusal.unwrap().message.starts_with(
            "Signature expired: 20240102T030405Z is now earlier than 20240102T030406Z"
        ));
        let early = verify(
            &bedrock_creds(),
            &req(h, body, path),
            at(date) - Duration::from_secs(301),
        );
        assert!(early
            .refusal
            .unwrap()
            .message
            .starts_with("Signature not yet current"));
        assert_eq!(
            verify(
                &bedrock_creds(),
                &req(h, body, path),
                at(date) + Duration::from_secs(299)
            )
            .refusal,
            None
        );
        let mut creds = bedrock_creds();
        creds.region = "us-east-1".to_owned();
        assert!(verify(&creds, &req(h, body, path), at(date))
            .refusal
            .unwrap()
            .message
            .contains("region"));
        let mut creds = bedrock_creds();
        creds.access_key_id = "AKIAOTHER".to_owned();
        assert_eq!(
            verify(&creds, &req(h, body, path), at(date))
                .refusal
                .unwrap()
                .error_type,
            "UnrecognizedClientException"
        );
        let mut creds = bedrock_creds();
        creds.secret_access_key = "other".to_owned();
        assert!(verify(&creds, &req(h, body, path), at(date))
            .refusal
            .is_some());
        // A matching x-amz-content-sha256 is fine; a wrong one is refused.
        let mut with_hash = h.clone();
        with_hash.insert(
            "x-amz-content-sha256",
            HeaderValue::from_str(&sha256_hex(body.as_bytes())).unwrap(),
        );
        let with_hash: &'static HeaderMap = Box::leak(Box::new(with_hash));
        assert_eq!(
            verify(&bedrock_creds(), &req(with_hash, body, path), at(date)).refusal,
            None
        );
        let mut bad_hash = h.clone();
        bad_hash.insert("x-amz-content-sha256", HeaderValue::from_static(EMPTY_SHA));
        let bad_hash: &'static HeaderMap = Box::leak(Box::new(bad_hash));
        assert!(
            verify(&bedrock_creds(), &req(bad_hash, body, path), at(date))
                .refusal
                .unwrap()
                .message
                .contains("x-amz-content-sha256")
        );
    }

    #[test]
    fn malformed_or_missing_authorization() {
        let h = HeaderMap::new();
        let req = Signed {
            method: "GET",
            path: "/",
            query: None,
            headers: &h,
            body: b"",
        };
        let r = verify(&suite_creds(), &req, at(AMZ_DATE)).refusal.unwrap();
        assert_eq!(
            (r.error_type, r.status),
            ("MissingAuthenticationTokenException", 403)
        );
        let h = headers(&[("authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, Signature=abc")]);
        let req = Signed {
            method: "GET",
            path: "/",
            query: None,
            headers: &h,
            body: b"",
        };
        let r = verify(&suite_creds(), &req, at(AMZ_DATE)).refusal.unwrap();
        assert_eq!(
            (r.error_type, r.status),
            ("IncompleteSignatureException", 400)
        );
        assert!(r.message.contains("SignedHeaders"));
        assert_eq!(
            parse_authorization("AWS4-HMAC-SHA256 Credential=K/20150830/r/s/aws4_request,SignedHeaders=host,Signature=ab").unwrap().region,
            "r"
        );
    }
}
