//! Vertex AI's authentication: Google's OAuth2 token endpoint for service accounts (the JWT
//! bearer grant), the GCE metadata server's token path, and the bearer-token check of the Vertex
//! AI paths (whose wire format is Gemini's, see `gemini`).
//!
//! Written from Google's documentation: "Using OAuth 2.0 for Server to Server Applications"
//! (the JWT's header and claim set, the `urn:ietf:params:oauth:grant-type:jwt-bearer` grant, the
//! token response and its errors), RFC 7523 / RFC 7519 / RFC 7515 (JWT bearer grants, JWTs, JWS
//! RS256), the Compute Engine "About VM metadata" page (the `Metadata-Flavor: Google` header,
//! `instance/service-accounts/default/token`), and Google's API error model for the 401s.
//!
//! # The token endpoint: `POST /token` (also `/oauth2/v4/token`)
//!
//! Form `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`. The JWT must be
//! `{"alg": "RS256", ...}`, signed with the service account's key — verified against
//! `--gcp-sa-public-key FILE` (a PEM `PUBLIC KEY` or `RSA PUBLIC KEY`) when one is configured —,
//! with claims `iss` = `--gcp-sa-email` (any, when none is configured), `aud` = the token URI
//! (`--gcp-token-uri`, `https://oauth2.googleapis.com/token`, or this mock's own
//! `http://<Host>/token`), a `scope` that includes `https://www.googleapis.com/auth/cloud-platform`,
//! and `iat` / `exp` sane (`exp` after `iat` by at most an hour, `iat` at most 5 minutes ahead of
//! the mock's clock, `exp` not passed). Answer: `{"access_token": "ya29.mock...",
//! "expires_in": --gcp-token-ttl (default 3600), "token_type": "Bearer"}`. Refusals as Google
//! sends them: 400 `{"error": "unsupported_grant_type" | "invalid_request" | "invalid_grant" |
//! "invalid_scope", "error_description": ...}` ("Invalid JWT Signature.", "Invalid JWT: Token
//! must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp
//! values in the JWT claim.", "Invalid grant: account not found", "Invalid JWT: Failed audience
//! check. ..."). Each grant is counted (`token_grants` in `GET /__mock/stats`); the request is
//! recorded with `auth: {"scheme": "jwt-bearer", "ok", "error", "signature_verified", "iss",
//! "aud", "scope"}`.
//!
//! # The metadata server: `GET /computeMetadata/v1/instance/service-accounts/default/token`
//!
//! Requires `Metadata-Flavor: Google` (else 403, text); issues a token as above (counted too),
//! `{"access_token", "expires_in", "token_type": "Bearer"}`, with `Metadata-Flavor: Google` on
//! the answer. Also `.../service-accounts/default/email` (`--gcp-sa-email`) and
//! `/computeMetadata/v1/project/project-id` (`mock-project`).
//!
//! # The Vertex AI paths
//!
//! `Authorization: Bearer <token>` is required: without it 401 `UNAUTHENTICATED` "Request is
//! missing required authentication credential. ..." (reason `CREDENTIALS_MISSING`). When
//! `--gcp-sa-public-key` is configured the token must be one this mock issued and not expired
//! (else 401 `UNAUTHENTICATED` "Request had invalid authentication credentials. ...", reason
//! `ACCESS_TOKEN_EXPIRED` / `ACCESS_TOKEN_TYPE_UNSUPPORTED`, with `www-authenticate: Bearer
//! realm="https://accounts.google.com/", error="invalid_token"`); without it any bearer token
//! passes. Recorded as `auth: {"scheme": "bearer", "ok", "reason", "issued_by_mock"}`.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderMap, Method, Response, StatusCode};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use serde_json::{json, Value};

use crate::body::{hdr_string, json_response, MockBody};
use crate::control::{self, Extra};
use crate::gemini::google_error;
use crate::server::State;
use crate::sigv4::percent_decode;
use crate::Options;

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// Issued tokens kept, at most (expired ones are dropped first).
const MAX_TOKENS: usize = 100_000;

/// The service-account settings and the tokens issued.
pub(crate) struct GcpAuth {
    /// The service account's RSA public key (PKCS#1 `RSAPublicKey` DER).
    public_key: Option<Vec<u8>>,
    email: Option<String>,
    ttl: u64,
    token_uri: Option<String>,
    tokens: Mutex<HashMap<String, Instant>>,
}

impl GcpAuth {
    pub(crate) fn new(o: &Options) -> io::Result<GcpAuth> {
        let public_key = match &o.gcp_sa_public_key {
            Some(path) => {
                let pem = std::fs::read_to_string(path).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("--gcp-sa-public-key {}: {e}", path.display()),
                    )
                })?;
                Some(rsa_public_key_der(&pem).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("--gcp-sa-public-key {}: {e}", path.display()),
                    )
                })?)
            }
            None => None,
        };
        Ok(GcpAuth {
            public_key,
            email: o.gcp_sa_email.clone(),
            ttl: o.gcp_token_ttl,
            token_uri: o.gcp_token_uri.clone(),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// Issue a fresh access token valid for the configured TTL.
    fn issue(&self) -> Option<String> {
        let mut raw = [0u8; 24];
        SystemRandom::new().fill(&mut raw).ok()?;
        let token = format!(
            "ya29.mock.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        let now = Instant::now();
        let mut tokens = self.tokens.lock().ok()?;
        if tokens.len() >= MAX_TOKENS {
            tokens.retain(|_, exp| *exp > now);
            if tokens.len() >= MAX_TOKENS {
                tokens.clear();
            }
        }
        tokens.insert(token.clone(), now + Duration::from_secs(self.ttl));
        Some(token)
    }
}

/// The `RSAPublicKey` DER inside a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) or `RSA PUBLIC KEY`.
pub(crate) fn rsa_public_key_der(pem: &str) -> Result<Vec<u8>, String> {
    let body = |label: &str| {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        let start = pem.find(&begin)? + begin.len();
        let stop = pem[start..].find(&end)? + start;
        let b64: String = pem[start..stop].split_whitespace().collect();
        base64::engine::general_purpose::STANDARD.decode(b64).ok()
    };
    if let Some(der) = body("RSA PUBLIC KEY") {
        return Ok(der);
    }
    let spki = body("PUBLIC KEY").ok_or("no PEM PUBLIC KEY or RSA PUBLIC KEY block")?;
    // SubjectPublicKeyInfo ::= SEQUENCE { AlgorithmIdentifier, BIT STRING (RSAPublicKey) }
    let (tag, seq, _) = der_tlv(&spki)?;
    if tag != 0x30 {
        return Err("SubjectPublicKeyInfo is not a SEQUENCE".to_owned());
    }
    let (tag, alg, rest) = der_tlv(seq)?;
    const RSA_ENCRYPTION: &[u8] = &[
        0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01,
    ];
    if tag != 0x30 || !alg.starts_with(RSA_ENCRYPTION) {
        return Err("not an RSA public key".to_owned());
    }
    let (tag, bits, _) = der_tlv(rest)?;
    match bits.split_first() {
        Some((0, key)) if tag == 0x03 => Ok(key.to_vec()),
        _ => Err("malformed subjectPublicKey BIT STRING".to_owned()),
    }
}

/// One DER tag-length-value: `(tag, value, the bytes after it)`.
fn der_tlv(b: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let short = || "DER value cut short".to_owned();
    let (&tag, rest) = b.split_first().ok_or_else(short)?;
    let (&first, rest) = rest.split_first().ok_or_else(short)?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 || rest.len() < n {
            return Err("bad DER length".to_owned());
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |l, &x| l << 8 | usize::from(x));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(short());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// Whether a path is the token endpoint's or the metadata server's.
pub(crate) fn is_auth_path(path: &str) -> bool {
    path == "/token" || path == "/oauth2/v4/token" || path.starts_with("/computeMetadata/")
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The claims of a verified assertion.
#[derive(Debug)]
struct Grant {
    iss: String,
    aud: String,
    scope: String,
    signature_verified: bool,
}

/// `(error, error_description)` of a refused grant.
type GrantError = (&'static str, String);

/// Verify a JWT bearer assertion: signature (with `key`, when one is configured), then claims.
fn verify_assertion(
    auth: &GcpAuth,
    jwt: &str,
    audiences: &[String],
    now: i64,
) -> Result<Grant, GrantError> {
    let invalid = |m: &str| ("invalid_grant", m.to_owned());
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h64, c64, s64] = parts[..] else {
        return Err(invalid("Invalid JWT: a JWT has three dot-separated parts."));
    };
    let b64 = |s: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| invalid("Invalid JWT: a part is not base64url."))
    };
    let header: Value = serde_json::from_slice(&b64(h64)?)
        .map_err(|_| invalid("Invalid JWT: the header is not JSON."))?;
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(invalid("Invalid JWT: the algorithm must be RS256."));
    }
    let claims: Value = serde_json::from_slice(&b64(c64)?)
        .map_err(|_| invalid("Invalid JWT: the claim set is not JSON."))?;
    let signature = b64(s64)?;
    if let Some(key) = &auth.public_key {
        let signed = format!("{h64}.{c64}");
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key)
            .verify(signed.as_bytes(), &signature)
            .map_err(|_| invalid("Invalid JWT Signature."))?;
    }
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if iss.is_empty() || auth.email.as_ref().is_some_and(|e| *e != iss) {
        return Err(invalid("Invalid grant: account not found"));
    }
    let aud = claims
        .get("aud")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if !audiences.contains(&aud) {
        return Err(invalid(&format!(
            "Invalid JWT: Failed audience check. The right audience is {}",
            audiences.first().map_or(GOOGLE_TOKEN_URI, String::as_str)
        )));
    }
    let (iat, exp) = (
        claims.get("iat").and_then(Value::as_i64),
        claims.get("exp").and_then(Value::as_i64),
    );
    let sane = match (iat, exp) {
        (Some(iat), Some(exp)) => exp > iat && exp - iat <= 3600 && iat <= now + 300 && exp >= now,
        _ => false,
    };
    if !sane {
        return Err(invalid("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim."));
    }
    let scope = claims
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if !scope.split_whitespace().any(|s| s == CLOUD_PLATFORM) {
        return Err((
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.".to_owned(),
        ));
    }
    Ok(Grant {
        iss,
        aud,
        scope,
        signature_verified: auth.public_key.is_some(),
    })
}

/// An `application/x-www-form-urlencoded` value (`+` is a space).
fn form_value(body: &str, key: &str) -> Option<String> {
    body.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key)
            .then(|| String::from_utf8_lossy(&percent_decode(&v.replace('+', " "))).into_owned())
    })
}

fn oauth_error(state: &State, error: &str, description: &str) -> Response<MockBody> {
    json_response(
        state,
        StatusCode::BAD_REQUEST,
        json!({"error": error, "error_description": description}).to_string(),
    )
}

fn token_answer(state: &State) -> Response<MockBody> {
    match state.gcp.issue() {
        Some(token) => {
            state.token_grants.fetch_add(1, Ordering::Relaxed);
            let mut resp = json_response(
                state,
                StatusCode::OK,
                json!({"access_token": token, "expires_in": state.gcp.ttl, "token_type": "Bearer"})
                    .to_string(),
            );
            resp.headers_mut().insert(
                "cache-control",
                HeaderValue::from_static("no-cache, no-store, max-age=0, must-revalidate"),
            );
            resp
        }
        None => oauth_error(state, "internal_failure", "mock: could not issue a token"),
    }
}

fn text(state: &State, status: StatusCode, body: &'static str) -> Response<MockBody> {
    let mut resp = json_response(state, status, body);
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// `POST /token` and the metadata server's paths.
pub(crate) fn handle_auth(state: &State, parts: &Parts, body: Bytes) -> Response<MockBody> {
    let path = parts.uri.path();
    if let Some(rest) = path.strip_prefix("/computeMetadata/v1/") {
        if state.record {
            control::record_extra(state, parts, &body, Extra::default());
        }
        if hdr_string(&parts.headers, "metadata-flavor").as_deref() != Some("Google") {
            return text(
                state,
                StatusCode::FORBIDDEN,
                "Missing Metadata-Flavor:Google header.",
            );
        }
        let mut resp = match rest {
            "instance/service-accounts/default/token" => token_answer(state),
            "instance/service-accounts/default/email" => match &state.gcp.email {
                Some(e) => {
                    let mut r = json_response(state, StatusCode::OK, e.clone());
                    r.headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("application/text"));
                    r
                }
                None => text(state, StatusCode::NOT_FOUND, "Not Found"),
            },
            "project/project-id" => text(state, StatusCode::OK, "mock-project"),
            _ => text(state, StatusCode::NOT_FOUND, "Not Found"),
        };
        resp.headers_mut()
            .insert("metadata-flavor", HeaderValue::from_static("Google"));
        return resp;
    }
    let form = String::from_utf8_lossy(&body).into_owned();
    let host = hdr_string(&parts.headers, "host").unwrap_or_default();
    let mut audiences: Vec<String> = state.gcp.token_uri.iter().cloned().collect();
    audiences.push(GOOGLE_TOKEN_URI.to_owned());
    audiences.push(format!("http://{host}{path}"));
    audiences.push(format!("https://{host}{path}"));
    let outcome = if parts.method != Method::POST {
        Err((
            "invalid_request",
            "The token endpoint takes POST.".to_owned(),
        ))
    } else {
        match (
            form_value(&form, "grant_type"),
            form_value(&form, "assertion"),
        ) {
            (Some(g), _) if g != JWT_BEARER => {
                Err(("unsupported_grant_type", format!("Invalid grant_type: {g}")))
            }
            (None, _) => Err(("unsupported_grant_type", "Invalid grant_type: ".to_owned())),
            (_, None) => Err((
                "invalid_request",
                "Missing required parameter: assertion".to_owned(),
            )),
            (_, Some(jwt)) => verify_assertion(&state.gcp, &jwt, &audiences, unix_now()),
        }
    };
    if state.record {
        let auth = match &outcome {
            Ok(g) => {
                json!({"scheme": "jwt-bearer", "ok": true, "error": null, "signature_verified": g.signature_verified, "iss": g.iss, "aud": g.aud, "scope": g.scope})
            }
            Err((e, d)) => {
                json!({"scheme": "jwt-bearer", "ok": false, "error": e, "error_description": d})
            }
        };
        let extra = Extra {
            auth: Some(auth),
            ..Extra::default()
        };
        control::record_extra(state, parts, &body, extra);
    }
    match outcome {
        Ok(_) => token_answer(state),
        Err((e, d)) => oauth_error(state, e, &d),
    }
}

/// Check a Vertex AI request's bearer token; the verdict, and the refusal.
pub(crate) fn check_bearer(
    state: &State,
    headers: &HeaderMap,
    model: &str,
) -> (Value, Option<Response<MockBody>>) {
    let token = hdr_string(headers, "authorization")
        .and_then(|a| a.strip_prefix("Bearer ").map(|t| t.trim().to_owned()))
        .filter(|t| !t.is_empty());
    let refuse = |reason: &str, message: &str| {
        let details = json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": "googleapis.com",
            "metadata": {"service": "aiplatform.googleapis.com", "method": format!("google.cloud.aiplatform.v1.PredictionService ({model})")},
        }]);
        let mut resp = google_error(state, 401, message, Some(details));
        resp.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static(
                "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"",
            ),
        );
        resp
    };
    let Some(token) = token else {
        let r = refuse("CREDENTIALS_MISSING", "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.");
        return (
            json!({"scheme": "bearer", "ok": false, "reason": "CREDENTIALS_MISSING", "issued_by_mock": false}),
            Some(r),
        );
    };
    let expiry = state
        .gcp
        .tokens
        .lock()
        .ok()
        .and_then(|t| t.get(&token).copied());
    let invalid_credentials = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.";
    if state.gcp.public_key.is_some() {
        let reason = match expiry {
            None => Some("ACCESS_TOKEN_TYPE_UNSUPPORTED"),
            Some(exp) if exp <= Instant::now() => Some("ACCESS_TOKEN_EXPIRED"),
            Some(_) => None,
        };
        if let Some(reason) = reason {
            return (
                json!({"scheme": "bearer", "ok": false, "reason": reason, "issued_by_mock": expiry.is_some()}),
                Some(refuse(reason, invalid_credentials)),
            );
        }
    }
    (
        json!({"scheme": "bearer", "ok": true, "reason": null, "issued_by_mock": expiry.is_some()}),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::collect;
    use crate::server::test_state;
    use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};

    const PRIVATE: &str = include_str!("../fixtures/gcp-test-sa-key.pem");
    const PUBLIC_PATH: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/gcp-test-sa-key.pub.pem"
    );
    const EMAIL: &str = "mock-sa@mock-project.iam.gserviceaccount.com";

    /// A JWT over these claims, signed with the test key.
    fn jwt(claims: Value) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let pem: String = PRIVATE
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(pem)
            .unwrap();
        let key = RsaKeyPair::from_pkcs8(&der).unwrap();
        let signed = format!(
            "{}.{}",
            b64(br#"{"alg":"RS256","typ":"JWT","kid":"mock-key-1"}"#),
            b64(claims.to_string().as_bytes())
        );
        let mut sig = vec![0; key.public().modulus_len()];
        key.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            signed.as_bytes(),
            &mut sig,
        )
        .unwrap();
        format!("{signed}.{}", b64(&sig))
    }

    fn claims(now: i64) -> Value {
        json!({"iss": EMAIL, "scope": CLOUD_PLATFORM, "aud": GOOGLE_TOKEN_URI, "iat": now, "exp": now + 3600})
    }

    fn strict() -> State {
        test_state(&[
            "--gcp-sa-public-key",
            PUBLIC_PATH,
            "--gcp-sa-email",
            EMAIL,
            "--gcp-token-ttl",
            "60",
        ])
    }

    #[test]
    fn public_key_pem_forms() {
        let pem = std::fs::read_to_string(PUBLIC_PATH).unwrap();
        let der = rsa_public_key_der(&pem).unwrap();
        // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
        let (tag, seq, rest) = der_tlv(&der).unwrap();
        assert_eq!((tag, rest.len()), (0x30, 0));
        let (tag, modulus, rest) = der_tlv(seq).unwrap();
        assert_eq!((tag, modulus.len()), (0x02, 257));
        assert_eq!(der_tlv(rest).unwrap().1, &[1, 0, 1]);
        let pkcs1 = format!(
            "-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&der)
        );
        assert_eq!(rsa_public_key_der(&pkcs1).unwrap(), der);
        assert!(rsa_public_key_der("nothing").is_err());
    }

    #[test]
    fn assertions_are_verified() {
        let state = strict();
        let auds = vec![GOOGLE_TOKEN_URI.to_owned()];
        let now = unix_now();
        let g = verify_assertion(&state.gcp, &jwt(claims(now)), &auds, now).unwrap();
        assert!(g.signature_verified);
        assert_eq!(g.iss, EMAIL);
        let err = |c: Value| verify_assertion(&state.gcp, &jwt(c), &auds, now).unwrap_err();
        let mut c = claims(now);
        c["exp"] = json!(now + 7200);
        assert!(err(c).1.contains("short-lived"));
        let mut c = claims(now - 4000);
        c["exp"] = json!(now - 400);
        assert!(err(c).1.contains("short-lived"));
        let mut c = claims(now);
        c["iss"] = json!("other@x.iam.gserviceaccount.com");
        assert_eq!(err(c).1, "Invalid grant: account not found");
        let mut c = claims(now);
        c["aud"] = json!("https://example.com/token");
        assert!(err(c).1.contains("Failed audience check"));
        let mut c = claims(now);
        c["scope"] = json!("https://www.googleapis.com/auth/devstorage.read_only");
        assert_eq!(err(c).0, "invalid_scope");
        // A tampered claim set breaks the signature.
        let good = jwt(claims(now));
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let mut c = claims(now);
        c["scope"] = json!(format!("{CLOUD_PLATFORM} extra"));
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c.to_string());
        let e = verify_assertion(&state.gcp, &parts.join("."), &auds, now).unwrap_err();
        assert_eq!(e.1, "Invalid JWT Signature.");
        // Without a configured key the signature is not checked.
        let lax = test_state(&[]);
        assert!(
            !verify_assertion(&lax.gcp, &parts.join("."), &auds, now)
                .unwrap()
                .signature_verified
        );
    }

    fn token_request(state: &State, form: &str) -> (u16, Value) {
        let req = http::Request::post("/token")
            .header("host", "127.0.0.1:9")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let (s, _, b) = collect(handle_auth(state, &parts, Bytes::from(form.to_owned())));
        (s, serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn token_endpoint_and_bearer_check() {
        let state = strict();
        let now = unix_now();
        let mut c = claims(now);
        c["aud"] = json!("http://127.0.0.1:9/token");
        let form = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}",
            jwt(c)
        );
        let (s, v) = token_request(&state, &form);
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["token_type"], "Bearer");
        assert_eq!(v["expires_in"], 60);
        let token = v["access_token"].as_str().unwrap().to_owned();
        assert!(token.starts_with("ya29."));
        assert_eq!(state.token_grants.load(Ordering::Relaxed), 1);
        let (s, v) = token_request(&state, "grant_type=password&username=x");
        assert_eq!(
            (s, v["error"].as_str()),
            (400, Some("unsupported_grant_type"))
        );
        let (s, v) = token_request(
            &state,
            "grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer",
        );
        assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")));
        // The bearer check.
        let mut h = HeaderMap::new();
        let (verdict, refusal) = check_bearer(&state, &h, "gemini-2.5-flash");
        assert_eq!(verdict["reason"], "CREDENTIALS_MISSING");
        let (s, hd, b) = collect(refusal.unwrap());
        assert_eq!(s, 401);
        assert!(hd.contains_key("www-authenticate"));
        assert_eq!(
            serde_json::from_slice::<Value>(&b).unwrap()["error"]["status"],
            "UNAUTHENTICATED"
        );
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        let (verdict, refusal) = check_bearer(&state, &h, "m");
        assert!(refusal.is_none());
        assert_eq!(verdict["issued_by_mock"], true);
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer ya29.someone-elses"),
        );
        assert_eq!(
            check_bearer(&state, &h, "m").0["reason"],
            "ACCESS_TOKEN_TYPE_UNSUPPORTED"
        );
        // An expired token.
        if let Ok(mut t) = state.gcp.tokens.lock() {
            t.insert("ya29.old".to_owned(), Instant::now());
        }
        h.insert("authorization", HeaderValue::from_static("Bearer ya29.old"));
        assert_eq!(
            check_bearer(&state, &h, "m").0["reason"],
            "ACCESS_TOKEN_EXPIRED"
        );
        // Without a configured key any bearer token passes.
        assert!(check_bearer(&test_state(&[]), &h, "m").1.is_none());
    }

    #[test]
    fn metadata_server() {
        let state = test_state(&["--gcp-sa-email", EMAIL]);
        let get = |path: &str, flavor: bool| {
            let mut req = http::Request::get(path);
            if flavor {
                req = req.header("metadata-flavor", "Google");
            }
            let (parts, ()) = req.body(()).unwrap().into_parts();
            collect(handle_auth(&state, &parts, Bytes::new()))
        };
        let (s, h, b) = get(
            "/computeMetadata/v1/instance/service-accounts/default/token",
            true,
        );
        assert_eq!(s, 200);
        assert_eq!(h["metadata-flavor"], "Google");
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["expires_in"], 3600);
        assert_eq!(state.token_grants.load(Ordering::Relaxed), 1);
        assert_eq!(
            get(
                "/computeMetadata/v1/instance/service-accounts/default/token",
                false
            )
            .0,
            403
        );
        assert_eq!(
            get(
                "/computeMetadata/v1/instance/service-accounts/default/email",
                true
            )
            .2,
            EMAIL.as_bytes()
        );
    }
}
