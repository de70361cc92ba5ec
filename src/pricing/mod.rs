//! What a request costs: the built-in price table, exact cost arithmetic, and the record of models
//! that have no price.
//!
//! - **The table** ([`PriceTable::builtin`]) is `prices.csv` beside this file, compiled into the
//!   binary: USD per million tokens for input, cached input, cache write and output, and the batch
//!   discount, per provider and model id, with where each price comes from. `llmproxy prices`
//!   lists it. [`PriceTable::lookup`] finds a model's row by the rules in [`table`].
//! - **Overrides**: a model's `models[].pricing` replaces the table for that model; the config
//!   reader converts it to a [`Price`] at load ([`crate::config::Pricing::price`]). [`resolve`]
//!   applies that order.
//! - **Usage** ([`TokenUsage`]) has one meaning for every provider; its `from_*` constructors convert
//!   each provider's counters (see [`usage`] for who includes what).
//! - **Cost** ([`cost`]) is integer arithmetic end to end: a token count times a price in
//!   micro-dollars per million tokens is an exact number of pico-dollars; the request's pico-dollars
//!   (less the batch discount, also exact) are rounded once, to the nearest micro-dollar with halves
//!   rounded up, into [`Micros`]. Sums of `Micros` are exact; floats appear only when a value is
//!   exported to a float-only sink ([`Micros::as_usd_f64`]).
//! - **Unpriced models** ([`Unpriced`]) are counted and warned about once each; they are never
//!   priced at zero by default.
//!
//! This module is self-contained: the request path, the batcher and the spend store call into it.

pub mod money;
pub mod table;
pub mod unpriced;
pub mod usage;

pub use money::{DecimalError, Micros, PerMtok, Ppm};
pub use table::{Checked, Entry, Match, MatchKind, PriceTable, TableError, PROVIDERS};
pub use unpriced::{Unpriced, UnpricedCount};
pub use usage::{AnthropicCounts, BedrockCounts, GeminiCounts, OpenAiCounts, TokenUsage};

use std::sync::LazyLock;

/// The data file, as compiled in.
pub const BUILTIN_CSV: &str = include_str!("prices.csv");

/// When the built-in table was compiled (its prices are as published on the sources it names).
pub const COMPILED: &str = "2026-12-02";

/// Prices of one model, exact: micro-dollars per million tokens, and the batch discount in parts per
/// million.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price {
    /// Uncached input tokens.
    pub input: PerMtok,
    /// Input tokens read from the provider's prompt cache.
    pub cached_input: PerMtok,
    /// Input tokens written to the provider's prompt cache.
    pub cache_write: PerMtok,
    /// Output tokens, reasoning included.
    pub output: PerMtok,
    /// The fraction taken off every part of a request sent through the provider's Batch API.
    pub batch_discount: Ppm,
}

/// Pico-dollars in a micro-dollar.
const PICO_PER_MICRO: u128 = 1_000_000;

/// The cost of one request: uncached input at `input`, cache reads at `cached_input`, cache writes at
/// `cache_write`, output (reasoning included) at `output`, all less `batch_discount` when the request
/// went through a Batch API; computed exactly and rounded once to the nearest micro-dollar (halves
/// up). Saturates at `u64::MAX` micro-dollars instead of overflowing.
pub fn cost(price: &Price, usage: &TokenUsage, batched: bool) -> Micros {
    let parts = [
        (usage.uncached_prompt(), price.input),
        (usage.cached_prompt, price.cached_input),
        (usage.cache_write, price.cache_write),
        (usage.billed_completion(), price.output),
    ];
    // tokens × micro-dollars per million tokens = pico-dollars.
    let pico = parts.iter().fold(0u128, |sum, (tokens, rate)| {
        sum.saturating_add(u128::from(*tokens).saturating_mul(u128::from(rate.0)))
    });
    let (numerator, denominator) = if batched {
        let kept = Ppm::ONE.0.saturating_sub(price.batch_discount.0);
        (
            pico.saturating_mul(u128::from(kept)),
            PICO_PER_MICRO * u128::from(Ppm::ONE.0),
        )
    } else {
        (pico, PICO_PER_MICRO)
    };
    let micros = numerator.saturating_add(denominator / 2) / denominator;
    Micros(u64::try_from(micros).unwrap_or(u64::MAX))
}

static BUILTIN: LazyLock<PriceTable> = LazyLock::new(|| {
    PriceTable::parse(BUILTIN_CSV).unwrap_or_else(|e| {
        // The unit tests parse the same text, so this cannot ship; if it ever did, every model would
        // be reported as unpriced rather than priced wrongly.
        log::error!("the built-in price table does not parse ({e}); every model is unpriced");
        PriceTable::default()
    })
});

impl PriceTable {
    /// The compiled-in table, parsed on first use.
    pub fn builtin() -> &'static PriceTable {
        &BUILTIN
    }
}

/// The price of a deployment's model: the model's `models[].pricing` when configured, else the
/// built-in table's row for (`provider`, `model`); `None` when neither has one (count it with
/// [`Unpriced::record`]).
pub fn resolve(
    configured: Option<&crate::config::Pricing>,
    provider: &str,
    model: &str,
) -> Option<Price> {
    match configured {
        Some(p) => Some(p.price),
        None => PriceTable::builtin().lookup(provider, model).copied(),
    }
}

/// Every deployment's price under one config, resolved once when the config is loaded (so the
/// request path does a vector lookup, not a table search): `[model][deployment]`.
#[derive(Debug, Clone, Default)]
pub struct ConfigPrices(Vec<Vec<Option<Price>>>);

impl ConfigPrices {
    pub fn for_config(config: &crate::config::Config) -> ConfigPrices {
        ConfigPrices(
            config
                .models
                .iter()
                .map(|m| {
                    m.deployments
                        .iter()
                        .map(|d| {
                            let provider = config
                                .upstreams
                                .get(d.upstream_id.index())
                                .map_or("", |u| u.provider.as_str());
                            resolve(m.pricing.as_ref(), provider, &d.model)
                        })
                        .collect()
                })
                .collect(),
        )
    }

    /// The price of `models[model].deployments[deployment]`; `None`: unpriced.
    pub fn get(&self, model: usize, deployment: usize) -> Option<&Price> {
        self.0.get(model)?.get(deployment)?.as_ref()
    }
}

#[cfg(test)]
mod tests;
