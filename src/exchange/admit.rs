//! Admission into the model's rate scheduler (`crate::sched`): a request waits in the model's queue
//! for budget on one of its usable deployments, or is refused with 429 when the queue is full or
//! the wait would pass `queue.max_wait` or the request's deadline.

use super::{client_gone, Deadlines, Exchange, Failure, PROBE_AFTER};
use crate::error::GatewayError;
use crate::proxy::ctx::RequestCtx;
use crate::state::State;
use pingora::proxy::Session;
use std::time::Duration;
use tokio::time::Instant as TokioInstant;

/// Wait for rate budget: the balancer's pick `first` is preferred, any other usable
/// deployment of the model that has budget will do. Charges the request; refuses with 429 when the
/// model's queue is full or the wait would pass `queue.max_wait` (or the request's deadline).
#[allow(
    clippy::too_many_arguments,
    reason = "the admission's inputs are distinct values of one request, not a group"
)]
pub(super) async fn admit(
    state: &State,
    session: &mut Session,
    ctx: &mut RequestCtx,
    ex: &Exchange<'_, '_>,
    m: usize,
    first: usize,
    tried: &[usize],
    deadlines: Deadlines,
) -> Result<usize, Failure> {
    let sched = &state.sched.models[m];
    let balancer = &state.balancers[m];
    let mut candidates = vec![first];
    let usable = |i: usize| {
        state
            .upstreams
            .get(balancer.deployments[i].upstream_idx)
            .is_some_and(|u| u.healthy())
            && !balancer.deployments[i].cooling()
    };
    candidates.extend(
        (0..balancer.deployments.len()).filter(|&i| i != first && !tried.contains(&i) && usable(i)),
    );
    let estimate = if sched.needs_tokens() {
        crate::sched::tokens::estimate(
            ex.endpoint,
            &ex.req.body,
            sched.counter,
            sched.policy.default_max_tokens,
        )
    } else {
        crate::sched::tokens::Estimate::default()
    };
    let priority = session
        .req_header()
        .headers
        .get("x-llmproxy-priority")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u8>().ok())
        .unwrap_or(0);
    if sched.policy.scheduling == crate::config::models::Scheduling::Priority {
        ctx.key_identity(&session.req_header().headers);
    }
    let ask = crate::sched::Ask {
        tokens: estimate.total() as f64,
        priority,
        key: ctx.key_id.clone(),
        key_requests: None,
        key_tokens: None,
    };
    let remaining = deadlines
        .total
        .saturating_duration_since(TokioInstant::now());
    let acquired = tokio::select! {
        biased;
        r = tokio::time::timeout(remaining, sched.acquire(candidates, ask)) => r,
        _ = client_gone(session, PROBE_AFTER) => return Err(Failure::ClientGone),
    };
    let model = &sched.name;
    match acquired {
        Ok(Ok(ticket)) => {
            ctx.queue_wait += ticket.waited;
            ctx.admission = Some(crate::proxy::ctx::Admission {
                sched: sched.clone(),
                deployment: ticket.deployment,
                estimate,
                at: std::time::Instant::now(),
            });
            Ok(ticket.deployment)
        }
        Ok(Err(crate::sched::Refusal::StateUnavailable)) => Err(Failure::Error(
            GatewayError::StateUnavailable(format!(
                "Rate budgets for model `{model}` are unavailable (shared state unreachable); try again shortly"
            )),
        )),
        Ok(Err(crate::sched::Refusal::QueueFull { retry_after })) => {
            Err(Failure::Error(GatewayError::RateLimited {
                message: format!(
                    "Model `{model}` is at its rate limit and its queue is full; retry after {}s",
                    retry_after.as_secs()
                ),
                retry_after,
            }))
        }
        Ok(Err(crate::sched::Refusal::Timeout { .. })) | Err(_) => {
            let retry_after = match acquired {
                Ok(Err(crate::sched::Refusal::Timeout { retry_after })) => retry_after,
                _ => Duration::from_secs(1),
            };
            ctx.queue_wait += sched.policy.max_wait.min(remaining);
            Err(Failure::Error(GatewayError::RateLimited {
                message: format!(
                    "Model `{model}` is at its rate limit and the request could not start within its queue's max_wait; retry after {}s",
                    retry_after.as_secs()
                ),
                retry_after,
            }))
        }
    }
}
