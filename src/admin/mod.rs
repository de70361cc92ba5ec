//! The admin listener: `/health`, `/health/upstreams`, `/metrics`, `/stats` (with
//! `/stats/timeline` and `/stats/requests`: the web console's last hour and recent requests),
//! `/config`, `POST /reload`, and the web console under `/ui` ([`console`]). Loopback by default;
//! with `admin.token` set, every request but the console's needs `Authorization: Bearer <token>`
//! (the console signs in with it and keeps a session cookie instead).

pub mod console;

use crate::state::Shared;
use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;
use std::sync::Arc;
use subtle::ConstantTimeEq;

pub struct Admin {
    pub shared: Arc<Shared>,
    pub reloader: Arc<crate::reload::Reloader>,
    /// The web console's sessions.
    pub console: console::Console,
}

fn respond(status: u16, content_type: &str, body: Vec<u8>) -> http::Response<Vec<u8>> {
    let mut resp = http::Response::new(body);
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let len = resp.body().len();
    let h = resp.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        h.insert(http::header::CONTENT_TYPE, v);
    }
    h.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    resp
}

fn json_response(status: u16, v: serde_json::Value) -> http::Response<Vec<u8>> {
    respond(status, "application/json", v.to_string().into_bytes())
}

fn error(status: u16, code: &str, message: &str) -> http::Response<Vec<u8>> {
    let body = crate::error::openai_error_body(message, "invalid_request_error", None, code);
    respond(status, "application/json", body.to_vec())
}

impl Admin {
    fn authorized(&self, session: &ServerSession) -> bool {
        let state = self.shared.state.load();
        let Some(token) = state.config.admin.token.as_ref() else {
            return true;
        };
        let given = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        given.as_bytes().ct_eq(token.expose().as_bytes()).into()
    }

    fn upstreams(&self) -> serde_json::Value {
        upstream_report(&self.shared.state.load())
    }
}

/// The LiteLLM's health report of every deployment — `{"healthy_endpoints": [...],
/// "unhealthy_endpoints": [...], "healthy_count", "unhealthy_count"}` — as the admin listener's
/// `/health/upstreams` and a client listener's `/health` serve it (and `llmproxy --health` prints).
/// No secret: upstream credentials are not part of it, and a URL's password would be masked.
pub fn upstream_report(state: &crate::state::State) -> serde_json::Value {
    let (mut healthy, mut unhealthy) = (Vec::new(), Vec::new());
    for (mi, model) in state.config.models.iter().enumerate() {
        for (di, d) in model.deployments.iter().enumerate() {
            let pool = &state.upstreams[d.upstream_id.index()];
            let cooldown = state.balancers[mi].deployments[di].cooldown_left();
            let ok = pool.healthy() && cooldown.is_none();
            let entry = json!({
                "model": model.name,
                "deployment_model": d.model,
                "upstream": pool.cfg.name,
                "api_base": crate::config::secret::redact_url(&pool.cfg.url.raw),
                "healthy": ok,
                "cooldown_remaining_ms": cooldown.map(|c| c.as_millis() as u64),
                "last_error": pool.last_error(),
            });
            if ok {
                healthy.push(entry);
            } else {
                unhealthy.push(entry);
            }
        }
    }
    json!({
        "healthy_endpoints": healthy,
        "unhealthy_endpoints": unhealthy,
        "healthy_count": healthy.len(),
        "unhealthy_count": unhealthy.len(),
    })
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let p = session.req_header().uri.path();
        if p == "/ui" || p.starts_with("/ui/") {
            return console::serve(self, session).await;
        }
        if !self.authorized(session) {
            return error(401, "invalid_api_key", "admin token required");
        }
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        if path == "/reload" {
            if method != http::Method::POST {
                return error(405, "method_not_allowed", "use POST /reload");
            }
            let actor = if self.shared.state.load().config.admin.token.is_some() {
                crate::keys::Actor::AdminToken
            } else {
                crate::keys::Actor::Admin
            };
            return match self.reloader.reload(actor).await {
                Ok(summary) => json_response(200, json!({"status": "ok", "summary": summary})),
                Err(errs) => json_response(
                    400,
                    json!({"status": "error", "errors": errs.0.iter().map(|e| e.to_string()).collect::<Vec<_>>()}),
                ),
            };
        }
        if method != http::Method::GET {
            return error(
                405,
                "method_not_allowed",
                "only GET here (and POST /reload)",
            );
        }
        match path.as_str() {
            "/health" => json_response(200, json!({"status": "ok"})),
            "/health/upstreams" => json_response(200, self.upstreams()),
            "/metrics" => {
                self.shared.refresh_gauges();
                respond(
                    200,
                    "text/plain; version=0.0.4",
                    self.shared.metrics.encode(),
                )
            }
            "/config" => json_response(200, self.shared.state.load().config.redacted.clone()),
            "/stats" => {
                let mut v = self.shared.metrics.stats.json();
                if let Some(map) = v.as_object_mut() {
                    let state = self.shared.state.load();
                    map.insert("scheduler".into(), state.sched.stats());
                    map.insert("cache".into(), state.cache.stats());
                    map.insert("batches".into(), self.shared.batcher.stats_json());
                }
                json_response(200, v)
            }
            "/stats/timeline" => {
                let q = session.req_header().uri.query();
                let model = console::query_param(q, "model");
                let window = console::query_param(q, "window")
                    .and_then(|w| w.parse().ok())
                    .unwrap_or(300);
                let now = crate::metrics::timeline::now_ms();
                json_response(
                    200,
                    self.shared.timeline.json(model.as_deref(), window, now),
                )
            }
            "/stats/requests" => json_response(
                200,
                console::views::requests(&self.shared, session.req_header().uri.query()),
            ),
            _ => error(404, "not_found", "unknown admin path"),
        }
    }
}
