//! Choosing a deployment for a request.
//!
//! [`Balancer`] picks among a model's deployments with the configured strategy, skipping deployments
//! whose upstream has no healthy address and those this request already tried. `round_robin`,
//! `weighted_round_robin` and `random` use pingora-load-balancing's `Weighted` selection over one
//! synthetic backend per deployment (the backend's port is the deployment index: pingora's `Backend`
//! is keyed by address and weight, and several deployments may share one upstream address); addresses
//! and health of the upstreams themselves live in [`UpstreamPool`]. `least_busy` counts requests in
//! flight per deployment.

pub mod health;
pub mod upstream;

pub use upstream::UpstreamPool;

use crate::config::{Model, Strategy};
use pingora::lb::selection::weighted::Weighted;
use pingora::lb::selection::{algorithms, BackendIter, BackendSelection};
use pingora::lb::Backend;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

enum Selector {
    RoundRobin(Arc<Weighted<algorithms::RoundRobin>>),
    Random(Arc<Weighted<algorithms::Random>>),
    LeastBusy(AtomicUsize),
}

/// One deployment's live state.
pub struct DeploymentState {
    pub upstream_idx: usize,
    pub in_flight: AtomicUsize,
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
    pub fn new(model: &Model) -> Balancer {
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
                .map(|d| DeploymentState {
                    upstream_idx: d.upstream_idx,
                    in_flight: AtomicUsize::new(0),
                })
                .collect(),
        }
    }

    /// Pick a deployment whose upstream is healthy and that `tried` does not contain.
    pub fn pick(&self, upstreams: &[Arc<UpstreamPool>], tried: &[usize]) -> Option<usize> {
        let eligible = |i: usize| {
            i < self.deployments.len()
                && !tried.contains(&i)
                && upstreams
                    .get(self.deployments[i].upstream_idx)
                    .is_some_and(|u| u.healthy())
        };
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
