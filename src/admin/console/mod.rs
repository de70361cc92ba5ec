//! The web console: `GET /ui` on the admin listener (`admin_ui: true`, the default).
//!
//! The page is three files embedded in the binary (`src/admin/ui/`: `index.html`, `app.js`,
//! `app.css`, plus an icon): it loads nothing from anywhere else and runs nothing in the background
//! of the gateway. It reads and changes the gateway through JSON under `/ui/api/`:
//!
//! | call | what |
//! | --- | --- |
//! | `GET session` | whether sign-in is needed, whether this browser is signed in, its CSRF token |
//! | `POST login` `{"secret"}`, `POST logout` | sign in with `server.master_key` or `admin.token`; sign out |
//! | `GET overview?model=&window=` | the last hour per interval (`metrics::timeline`), the cache, batches, queues |
//! | `GET models` | each model's deployments (health, cooldown, last error, in flight, rpm/tpm budget levels, queue) and the upstreams with their checks |
//! | `GET requests?model=&key=&status=&limit=` | the most recent requests (access-log fields) |
//! | `GET spend?start=&end=` | spend per day by model and by key, since this process started |
//! | `GET config`, `POST reload` | the running config (redacted) and its warnings; reload, answering every error with its key path |
//! | `GET/POST manage/...` | the LiteLLM-shaped management API (`key/*`, `team/*`, `customer/*`, `spend/logs`, `global/spend/report`, `audit/logs`) called in process: what this build does not serve answers 404 and the page says so |
//!
//! Security ([`session`] has the details): sign-in when a credential is configured, a session cookie
//! (`HttpOnly; SameSite=Strict; Path=/ui`), a CSRF token on every `POST` (plus `Content-Type:
//! application/json` and, when the browser sends them, a same-origin `Origin` and
//! `Sec-Fetch-Site`), a strict Content-Security-Policy on every response (scripts and styles from
//! the console's own files only: no inline code, nothing from elsewhere), `no-store` on data, and
//! every configured secret masked in whatever the API returns (a last line of defence: the data
//! never holds one). Key hashes are dropped from management answers. The page builds its DOM with
//! `textContent` only, so every name, alias and metadata value is shown as text.

pub mod session;
pub mod views;

use super::Admin;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use session::{Access, SignInError};
use std::sync::LazyLock;

/// The Content-Security-Policy of every console response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Largest request body the console accepts.
const MAX_BODY: usize = 1 << 20;

/// The console's state: its sessions.
#[derive(Default)]
pub struct Console {
    pub sessions: session::Sessions,
}

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/ui",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../ui/index.html"),
    },
    Asset {
        path: "/ui/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/app.js"),
    },
    Asset {
        path: "/ui/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../ui/app.css"),
    },
    Asset {
        path: "/ui/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../ui/favicon.svg"),
    },
];

/// Each asset's ETag: a digest of its bytes, computed once.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    use sha2::Digest;
    ASSETS
        .iter()
        .map(|a| {
            let d = sha2::Sha256::digest(a.body);
            let hex: String = d.iter().take(8).map(|b| format!("{b:02x}")).collect();
            format!("\"{hex}\"")
        })
        .collect()
});

/// The page's total size in bytes (every asset once).
pub fn page_bytes() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

/// A console response under construction.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    headers: Vec<(http::header::HeaderName, String)>,
}

impl Reply {
    fn json(status: u16, v: &Value) -> Reply {
        let text = v.to_string();
        // Defence in depth: no configured secret leaves through the console, whatever the data.
        let text = crate::logging::scrub(&text).unwrap_or(text);
        Reply {
            status,
            content_type: "application/json",
            body: text.into_bytes(),
            headers: vec![(http::header::CACHE_CONTROL, "no-store".into())],
        }
    }

    fn error(status: u16, code: &str, message: &str) -> Reply {
        Reply::json(
            status,
            &json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}}),
        )
    }

    fn header(mut self, name: http::header::HeaderName, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }

    fn build(self) -> http::Response<Vec<u8>> {
        use http::header;
        let mut resp = http::Response::new(self.body);
        *resp.status_mut() = http::StatusCode::from_u16(self.status)
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        let len = resp.body().len();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(self.content_type),
        );
        h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
        for (name, value) in [
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (
                header::HeaderName::from_static("cross-origin-opener-policy"),
                "same-origin",
            ),
            (
                header::HeaderName::from_static("cross-origin-resource-policy"),
                "same-origin",
            ),
        ] {
            h.insert(name, header::HeaderValue::from_static(value));
        }
        for (name, value) in self.headers {
            if let Ok(v) = header::HeaderValue::from_str(&value) {
                h.append(name, v);
            }
        }
        resp
    }
}

fn session_cookie(id: &str) -> String {
    format!(
        "{}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}",
        session::COOKIE,
        session::LIFETIME.as_secs()
    )
}

fn clear_cookie() -> String {
    format!(
        "{}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0",
        session::COOKIE
    )
}

/// `name` from a query string, percent-decoded (`+` is a space); empty values count as absent.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .find_map(|pair| {
            let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
            (n == name).then(|| percent_decode(v))
        })
        .filter(|v| !v.is_empty())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Serve `/ui` and everything under it.
pub async fn serve(admin: &Admin, session: &mut ServerSession) -> http::Response<Vec<u8>> {
    let state = admin.shared.state.load_full();
    if !state.config.admin_ui {
        return Reply::error(404, "not_found", "the web console is off (admin_ui: false)").build();
    }
    let method = session.req_header().method.clone();
    let path = session.req_header().uri.path().to_string();
    if let Some(rest) = path.strip_prefix("/ui/api/") {
        let rest = rest.to_string();
        return api(admin, session, &state.config, &method, &rest)
            .await
            .build();
    }
    let path = if path == "/ui/" { "/ui" } else { path.as_str() };
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        return Reply::error(404, "not_found", "unknown console path").build();
    };
    if method != http::Method::GET {
        return Reply::error(405, "method_not_allowed", "use GET").build();
    }
    let asset = &ASSETS[i];
    let etag = &ETAGS[i];
    let cached = session
        .req_header()
        .headers
        .get(http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let reply = Reply {
        status: if cached { 304 } else { 200 },
        content_type: asset.content_type,
        body: if cached {
            Vec::new()
        } else {
            asset.body.to_vec()
        },
        headers: vec![
            (http::header::ETAG, etag.clone()),
            (http::header::CACHE_CONTROL, "no-cache".into()),
        ],
    };
    reply.build()
}

fn header(session: &ServerSession, name: http::header::HeaderName) -> Option<&str> {
    session
        .req_header()
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
}

/// What a state-changing call must look like besides its CSRF token: JSON, and from this origin
/// when the browser says where it comes from.
fn same_origin_post(session: &ServerSession) -> Result<(), Reply> {
    let json = header(session, http::header::CONTENT_TYPE)
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !json {
        return Err(Reply::error(
            415,
            "unsupported_media_type",
            "console calls send application/json",
        ));
    }
    let host = header(session, http::header::HOST).unwrap_or("");
    if let Some(origin) = header(session, http::header::ORIGIN) {
        let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
        if origin_host != host {
            return Err(Reply::error(
                403,
                "cross_origin",
                "cross-origin calls are refused",
            ));
        }
    }
    if let Some(site) = header(
        session,
        http::header::HeaderName::from_static("sec-fetch-site"),
    ) {
        if site != "same-origin" && site != "none" {
            return Err(Reply::error(
                403,
                "cross_origin",
                "cross-site calls are refused",
            ));
        }
    }
    Ok(())
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Reply> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(Reply::error(
                        413,
                        "request_too_large",
                        "request body too large",
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                log::debug!("console: reading a request body failed: {e}");
                return Err(Reply::error(400, "invalid_request", "unreadable body"));
            }
        }
    }
}

async fn api(
    admin: &Admin,
    session: &mut ServerSession,
    cfg: &crate::config::Config,
    method: &http::Method,
    rest: &str,
) -> Reply {
    let sessions = &admin.console.sessions;
    let post = *method == http::Method::POST;
    if !post && *method != http::Method::GET {
        return Reply::error(405, "method_not_allowed", "use GET or POST");
    }
    let cookie = header(session, http::header::COOKIE)
        .and_then(|c| session::cookie(c, session::COOKIE))
        .map(str::to_string);
    let sid = match sessions.access(cookie.as_deref(), cfg) {
        Access::Session(id) => Some(id),
        Access::None => None,
    };
    let csrf_given = header(
        session,
        http::header::HeaderName::from_static("x-csrf-token"),
    )
    .map(str::to_string);
    let query = session.req_header().uri.query().map(str::to_string);
    let body = if post {
        if let Err(r) = same_origin_post(session) {
            return r;
        }
        match read_body(session).await {
            Ok(b) => b,
            Err(r) => return r,
        }
    } else {
        Vec::new()
    };

    match (post, rest) {
        (false, "session") => {
            let required = session::sign_in_required(cfg);
            let (sid, cookie) = match sid {
                Some(id) => (Some(id), None),
                None => match sessions.open(cfg) {
                    Some(id) => (Some(id.clone()), Some(session_cookie(&id))),
                    None => (None, None),
                },
            };
            let reply = Reply::json(
                200,
                &json!({
                    "sign_in_required": required,
                    "signed_in": sid.is_some(),
                    "csrf": sessions.csrf(sid.as_deref()),
                    "credentials": views::credential_names(cfg),
                    "models": sid.as_ref().map(|_| cfg.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>()),
                }),
            );
            return match cookie {
                Some(c) => reply.header(http::header::SET_COOKIE, c),
                None => reply,
            };
        }
        (true, "login") => {
            // Sign-in carries the sign-in token (or, signing in again, the session's).
            let ok = sessions.csrf_ok(None, csrf_given.as_deref())
                || (sid.is_some() && sessions.csrf_ok(sid.as_deref(), csrf_given.as_deref()));
            if !ok {
                return Reply::error(403, "csrf", "missing or wrong CSRF token");
            }
            let secret = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("secret").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default();
            return match sessions.sign_in(&secret, cfg) {
                Ok(id) => {
                    if let Some(old) = &sid {
                        sessions.sign_out(old);
                    }
                    Reply::json(
                        200,
                        &json!({"signed_in": true, "csrf": sessions.csrf(Some(&id))}),
                    )
                    .header(http::header::SET_COOKIE, session_cookie(&id))
                }
                Err(SignInError::Wrong) => {
                    log::warn!("console: a sign-in failed");
                    Reply::error(401, "invalid_api_key", "wrong master key or admin token")
                }
                Err(SignInError::TooMany) => Reply::error(
                    429,
                    "rate_limited",
                    "too many failed sign-ins; try again in a minute",
                )
                .header(http::header::RETRY_AFTER, "60".into()),
            };
        }
        _ => {}
    }
    let Some(sid) = sid else {
        return Reply::error(401, "sign_in_required", "sign in first");
    };
    if post && !sessions.csrf_ok(Some(&sid), csrf_given.as_deref()) {
        return Reply::error(403, "csrf", "missing or wrong CSRF token");
    }
    let q = query.as_deref();
    match (post, rest) {
        (true, "logout") => {
            sessions.sign_out(&sid);
            Reply::json(200, &json!({"signed_in": false}))
                .header(http::header::SET_COOKIE, clear_cookie())
        }
        (false, "overview") => Reply::json(200, &views::overview(&admin.shared, q)),
        (false, "models") => Reply::json(200, &views::models(&admin.shared.state.load())),
        (false, "requests") => Reply::json(200, &views::requests(&admin.shared, q)),
        (false, "spend") => match views::spend(&admin.shared, q) {
            Ok(v) => Reply::json(200, &v),
            Err(msg) => Reply::error(400, "invalid_request", &msg),
        },
        (false, "config") => Reply::json(200, &views::config(cfg)),
        (true, "reload") => match admin.reloader.reload(crate::keys::Actor::Console).await {
            Ok(summary) => Reply::json(200, &json!({"status": "ok", "summary": summary})),
            Err(errs) => Reply::json(
                400,
                &json!({
                    "status": "error",
                    "errors": errs.0.iter().map(|e| json!({"path": e.path, "message": e.message})).collect::<Vec<_>>(),
                }),
            ),
        },
        (_, r) if r.starts_with("manage/") => {
            let (status, v) =
                views::manage(&admin.shared, method, &r["manage".len()..], q, &body).await;
            Reply::json(status, &v)
        }
        _ => Reply::error(404, "not_found", "unknown console call"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params() {
        assert_eq!(
            query_param(Some("a=1&model=gpt%2D4o+mini&x"), "model").as_deref(),
            Some("gpt-4o mini")
        );
        assert_eq!(query_param(Some("model="), "model"), None);
        assert_eq!(query_param(Some("k=%zz%4"), "k").as_deref(), Some("%zz%4"));
        assert_eq!(query_param(Some("k=%41"), "k").as_deref(), Some("A"));
        assert_eq!(query_param(None, "k"), None);
    }

    #[test]
    fn page_weight_stays_small() {
        // The budget is ~300 KiB; keep well under it.
        assert!(page_bytes() < 150 * 1024, "{} bytes", page_bytes());
    }
}
