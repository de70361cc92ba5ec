//! What a request costs: the built-in price table, and the exact money types prices are kept in.
//!
//! - **The table** ([`PriceTable::builtin`]) is `prices.csv` beside this file, compiled into the
//!   binary: USD per million tokens for input, cached input, cache write and output, and the batch
//!   discount, per provider and model id, with where each price comes from. [`PriceTable::lookup`]
//!   finds a model's row by the rules in [`table`].
//! - **Money** ([`money`]) is integers: prices in micro-dollars per million tokens, amounts in
//!   micro-dollars, parsed from decimal text without floating point.

pub mod money;
pub mod table;

pub use money::{DecimalError, Micros, PerMtok, Ppm};
pub use table::{Checked, Entry, Match, MatchKind, PriceTable, TableError, PROVIDERS};

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

#[cfg(test)]
mod tests;
