//! Choosing a deployment for a request.
//!
//! [`Balancer`] picks among a model's deployments with the configured strategy, skipping deployments
//! whose upstream has no healthy address and those this request already tried. `round_robin`,
//! `weighted_round_robin` and `random` use pingora-load-balancing's `Weighted` selection over one
//! synthetic backend per deployment (the backend's port is the deployment index: pingora's `Backend`
//! is keyed by address and weight, and several deployments may share one upstream address); addresses
//! and health of the upstreams themselves live in [`UpstreamPool`]. `least_busy` counts requests in
//! flight per deployment.

pub mod connect_proxy;
pub mod gcp;
pub mod health;
pub mod signer;
pub mod sigv4;
pub mod upstream;

pub use upstream::UpstreamPool;

use crate::config::models::CooldownPolicy;
use crate::config::{Model, Strategy};
use pingora::lb::selection::weighted::Weighted;
use pingora::lb::selection::{algorithms, BackendIter, BackendSelection};
use pingora::lb::Backend;
use std::collections::BTreeSet;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

enum Selector {
    RoundRobin(Arc<Weighted<algorithms::RoundRobin>>),
    Random(Arc<Weighted<algorithms::Random>>),
    LeastBusy(AtomicUsize),
}

/// A deployment's live state: requests in flight and cooldown. Shared across config reloads for a
/// deployment that did not change, so a reload neither forgets a cooldown nor resets `least_busy`.
#[derive(Default)]
pub struct DeploymentLive {
    pub in_flight: AtomicUsize,
    /// Cooling down until this many ms after [`epoch`] (0: not cooling). Read lock-free on every pick.
    cool_until_ms: AtomicU64,
    /// Recent failure times, for the `allowed_fails` within `window` rule (failure path only).
    fails: Mutex<VecDeque<Instant>>,
}

/// A deployment as this config sees it.
pub struct DeploymentState {
    pub upstream_idx: usize,
    pub live: Arc<DeploymentLive>,
}

impl std::ops::Deref for DeploymentState {
    type Target = DeploymentLive;
    fn deref(&self) -> &DeploymentLive {
        &self.live
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

impl DeploymentLive {
    /// Whether the deployment is cooling down now.
    pub fn cooling(&self) -> bool {
        let until = self.cool_until_ms.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    /// How long the cooldown still lasts.
    pub fn cooldown_left(&self) -> Option<Duration> {
        let until = self.cool_until_ms.load(Ordering::Relaxed);
        let now = now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// Take the deployment out for `d` (a cooldown, or an upstream's `Retry-After`).
    pub fn cool_for(&self, d: Duration) {
        let until = now_ms() + d.as_millis() as u64;
        self.cool_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// Count a failure; returns true when it starts a cooldown.
    pub fn record_failure(&self, policy: Option<&CooldownPolicy>) -> bool {
        let Some(p) = policy else {
            return false;
        };
        let now = Instant::now();
        let Ok(mut fails) = self.fails.lock() else {
            return false;
        };
        while fails
            .front()
            .is_some_and(|t| now.duration_since(*t) > p.window)
        {
            fails.pop_front();
        }
        fails.push_back(now);
        if fails.len() >= p.allowed_fails {
            fails.clear();
            drop(fails);
            self.cool_for(p.duration);
            return true;
        }
        false
    }
}

pub struct Balancer {
    selector: Selector,
    pub deployments: Vec<DeploymentState>,
}

/// Decrements the deployment's in-flight count when the exchange ends, however it ends.
pub struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn synthetic_backends(model: &Model, weighted: bool) -> BTreeSet<Backend> {
    model
        .deployments
        .iter()
        .enumerate()
        .map(|(i, d)| Backend {
            addr: pingora::protocols::l4::socket::SocketAddr::Inet(SocketAddr::from((
                [0, 0, 0, 0],
                i as u16,
            ))),
            weight: if weighted { d.weight } else { 1 },
            ext: Default::default(),
        })
        .collect()
}

fn index_of(b: &Backend) -> usize {
    b.addr
        .as_inet()
        .map(|a| a.port() as usize)
        .unwrap_or(usize::MAX)
}

impl Balancer {
    /// `carry(i)` returns the live state of deployment `i` from the previous config, when it is the
    /// same deployment.
    pub fn new(model: &Model, carry: &dyn Fn(usize) -> Option<Arc<DeploymentLive>>) -> Balancer {
        let selector = match model.strategy {
            Strategy::RoundRobin => {
                Selector::RoundRobin(Arc::new(Weighted::build(&synthetic_backends(model, false))))
            }
            Strategy::WeightedRoundRobin => {
                Selector::RoundRobin(Arc::new(Weighted::build(&synthetic_backends(model, true))))
            }
            Strategy::Random => {
                Selector::Random(Arc::new(Weighted::build(&synthetic_backends(model, true))))
            }
            Strategy::LeastBusy => Selector::LeastBusy(AtomicUsize::new(0)),
        };
        Balancer {
            selector,
            deployments: model
                .deployments
                .iter()
                .enumerate()
                .map(|(i, d)| DeploymentState {
                    upstream_idx: d.upstream_id.index(),
                    live: carry(i).unwrap_or_default(),
                })
                .collect(),
        }
    }

    /// Pick a deployment whose upstream is healthy and that `tried` does not contain, preferring
    /// deployments that are not cooling down (when all are, cooldown is ignored rather than failing).
    pub fn pick(&self, upstreams: &[Arc<UpstreamPool>], tried: &[usize]) -> Option<usize> {
        let usable = |i: usize| {
            i < self.deployments.len()
                && !tried.contains(&i)
                && upstreams
                    .get(self.deployments[i].upstream_idx)
                    .is_some_and(|u| u.healthy())
        };
        self.pick_with(|i| usable(i) && !self.deployments[i].cooling())
            .or_else(|| self.pick_with(usable))
    }

    fn pick_with(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.deployments.len();
        match &self.selector {
            Selector::RoundRobin(w) => first_eligible(w.iter(b""), n, eligible),
            Selector::Random(w) => first_eligible(w.iter(b""), n, eligible),
            Selector::LeastBusy(rotation) => {
                // Fewest in flight; ties rotate so equally idle deployments share the load.
                let start = rotation.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| (start + k) % n)
                    .filter(|&i| eligible(i))
                    .min_by_key(|&i| self.deployments[i].in_flight.load(Ordering::Relaxed))
            }
        }
    }

    /// Count a request in flight on deployment `i` until the guard drops.
    pub fn enter(&self, i: usize) -> Option<InFlight<'_>> {
        let d = self.deployments.get(i)?;
        d.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(InFlight(&d.in_flight))
    }
}

fn first_eligible<I: BackendIter>(
    mut it: I,
    n: usize,
    eligible: impl Fn(usize) -> bool,
) -> Option<usize> {
    // The first pick is weighted; later ones walk the unique list. Bound the walk, then fall back to
    // a scan so an eligible deployment is always found when one exists.
    for _ in 0..(2 * n + 4) {
        match it.next() {
            Some(b) if eligible(index_of(b)) => return Some(index_of(b)),
            Some(_) => continue,
            None => break,
        }
    }
    (0..n).find(|&i| eligible(i))
}
