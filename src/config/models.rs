//! `models:` — what clients ask for (names and aliases) and the deployments that serve it.

use super::reader::{Node, Reader};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    RoundRobin,
    WeightedRoundRobin,
    Random,
    LeastBusy,
}

impl Strategy {
    pub fn as_str(&self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::WeightedRoundRobin => "weighted_round_robin",
            Strategy::Random => "random",
            Strategy::LeastBusy => "least_busy",
        }
    }
}

/// One deployment of a model: an upstream and the model name that upstream knows it by.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub upstream: String,
    /// Index into `Config::upstreams` (resolved at validation).
    pub upstream_idx: usize,
    pub model: String,
    pub weight: usize,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub aliases: Vec<String>,
    pub strategy: Strategy,
    pub deployments: Vec<Deployment>,
}

/// Keys of the reference that later features implement.
const NOT_YET: &[&str] = &[
    "drop_params",
    "queue",
    "retry",
    "cooldown",
    "fallbacks",
    "context_window_fallbacks",
    "timeout",
    "cache",
    "batch",
    "pricing",
];

pub fn read(r: &mut Reader, node: Node) -> Option<Model> {
    let mut allowed = vec!["name", "aliases", "strategy", "deployments"];
    allowed.extend_from_slice(NOT_YET);
    let m = node.map(r, &allowed)?;
    m.not_yet(r, NOT_YET);
    let name = m.required(r, "name", |r, n| n.string(r));
    let aliases = m
        .with(r, "aliases", |r, n| Some(n.list_of_strings(r)))
        .unwrap_or_default();
    let strategy = m
        .with(r, "strategy", |r, n| {
            n.choice(
                r,
                &[
                    ("round_robin", Strategy::RoundRobin),
                    ("weighted_round_robin", Strategy::WeightedRoundRobin),
                    ("random", Strategy::Random),
                    ("least_busy", Strategy::LeastBusy),
                ],
            )
        })
        .unwrap_or(Strategy::WeightedRoundRobin);
    let deployments = m
        .required(r, "deployments", |r, n| {
            Some(n.non_empty_list(r, read_deployment))
        })
        .unwrap_or_default();
    Some(Model {
        name: name?,
        aliases,
        strategy,
        deployments,
    })
}

fn read_deployment(r: &mut Reader, n: Node) -> Option<Deployment> {
    let m = n.map(r, &["upstream", "model", "weight", "rpm", "tpm", "params"])?;
    m.not_yet(r, &["rpm", "tpm", "params"]);
    let upstream = m.required(r, "upstream", |r, n| n.string(r));
    let model = m.required(r, "model", |r, n| n.string(r));
    let weight = m.with(r, "weight", |r, n| n.u64(r)).unwrap_or(1);
    if weight == 0 || weight > 1000 {
        r.error(
            &format!("{}.weight", m.path()),
            "weight must be between 1 and 1000",
        );
    }
    Some(Deployment {
        upstream: upstream?,
        upstream_idx: usize::MAX,
        model: model?,
        weight: weight.clamp(1, 1000) as usize,
    })
}
