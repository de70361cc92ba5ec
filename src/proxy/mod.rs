//! The client-facing proxy: `impl ProxyHttp` only sequences the phases; the work lives in the rooms.
//!
//! | phase | model endpoints (`/v1/chat/completions`, ...) | passthrough routes (`routes[].prefix`) |
//! | --- | --- | --- |
//! | `early_request_filter` | client timeouts | same |
//! | `request_filter` | request id, listener, client limit, auth ([`crate::auth`]); then [`serve`]: parse, resolve, cache, batch, the upstream exchange ([`crate::exchange`]); answer | request id, auth, route admission ([`passthrough`]); hand to Pingora's proxy loop |
//! | `request_body_filter` | — | body size limit |
//! | `upstream_peer` | — | a healthy address of the route's upstream |
//! | `upstream_request_filter` | — | path, Host, the upstream's auth and header ops; client credentials removed |
//! | `fail_to_connect` | — | retry on the next address |
//! | `response_filter` / `response_body_filter` | — | `x-request-id`, `x-llmproxy-deployment`; usage scan |
//! | `fail_to_proxy` | OpenAI-shaped error | same |
//! | `logging` | metrics, spend, spend log, span, access log ([`observe`]); rate budgets settled ([`crate::auth::settle`]) | same |
//!
//! | room | holds |
//! | --- | --- |
//! | [`ctx`] | the request context: config snapshot, caller, outcome |
//! | [`serve`] | dispatch by path; the model request's flow; key management calls |
//! | [`models`] | `/v1/models`, and the scoped model lookup |
//! | [`cached`] | the response cache on the request path (plan, serve, single flight) |
//! | [`batch`] | handing a request to the Batch API coalescer |
//! | [`passthrough`] | passthrough routes in Pingora's proxy loop |
//! | [`observe`] | metrics, spend, span and access log when a request ends |
//! | [`body`], [`respond`], [`client_addr`] | reading bodies, writing the gateway's answers, the client's address |

pub mod batch;
pub mod body;
pub mod cached;
pub mod client_addr;
pub mod ctx;
pub mod models;
pub mod observe;
pub mod passthrough;
pub mod respond;
pub mod serve;

use crate::state::{Shared, State};
use async_trait::async_trait;
use bytes::Bytes;
use ctx::RequestCtx;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use serve::Handled;
use std::sync::Arc;
use std::time::Duration;

/// The request context as Pingora holds it: boxed, so that the connection's future (which keeps
/// three copies of the context and moves it on each request) carries a pointer, not ~500 bytes.
type Ctx = Box<RequestCtx>;

/// The gateway service: one per process, shared by every listener.
pub struct Gateway {
    pub shared: Arc<Shared>,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    /// A request runs on the config snapshot current when it starts, to its end.
    fn new_ctx(&self) -> Ctx {
        Box::new(RequestCtx::new(self.shared.state.load_full()))
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let t = ctx.state.config.server.client_timeouts;
        session.set_read_timeout(Some(t.header));
        // Pipelined requests are answered in order (their bytes are set aside while this one runs).
        session.as_downstream_mut().set_pipelining_enabled(true);
        // Pingora turns keep-alive off when the client asks for `Connection: close` and for every
        // request read after a shutdown or upgrade began (the answer then says `Connection: close`,
        // so the client reconnects to the new process); only lengthen what is still on.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(t.idle.as_secs()));
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let header = session.req_header();
        ctx.request_id = ctx::request_id(
            header
                .headers
                .get(respond::X_REQUEST_ID)
                .map(|v| v.as_bytes()),
        );
        ctx.listener = listener_index(&ctx.state, session);
        let admitted = match crate::auth::client_limited(&self.shared, session, ctx) {
            Some(e) => Err(e),
            None => crate::auth::authenticate(&self.shared, session, ctx),
        };
        let handled = match admitted {
            Ok(()) => serve::handle(&self.shared, session, ctx).await,
            Err(e) => Err(e),
        };
        match handled {
            Ok(Handled::Done) => Ok(true),
            Ok(Handled::Proxy) => Ok(false),
            Ok(Handled::Abort) => Error::e_explain(ConnectionClosed, "upstream response broke off"),
            Err(e) => {
                respond::error(session, ctx, &e).await;
                Ok(true)
            }
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        passthrough::count_body(ctx, body.as_ref())
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        passthrough::peer(ctx)
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        passthrough::upstream_request(ctx, req).await
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        e: Box<Error>,
    ) -> Box<Error> {
        passthrough::connect_failed(&self.shared, ctx, peer, e)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        passthrough::response_header(ctx, resp)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        passthrough::response_body(ctx, body.as_ref(), end_of_stream);
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let Some(ge) = passthrough::failure(ctx, e) else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        if session.response_written().is_none() {
            respond::error(session, ctx, &ge).await;
        }
        ctx.outcome
            .error
            .get_or_insert(ctx::ErrorKind::Gateway(ge.code()));
        FailToProxy {
            error_code: ge.status(),
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        observe::record(&self.shared, session, ctx);
        crate::auth::settle(ctx).await;
    }
}

/// Which configured listener accepted this connection.
fn listener_index(state: &State, session: &Session) -> usize {
    let Some(local) = session.server_addr().and_then(|a| a.as_inet()) else {
        return 0;
    };
    let listeners = &state.config.server.listeners;
    listeners
        .iter()
        .position(|l| l.listen == *local)
        .or_else(|| {
            listeners
                .iter()
                .position(|l| l.listen.port() == local.port() && l.listen.ip().is_unspecified())
        })
        .unwrap_or(0)
}
