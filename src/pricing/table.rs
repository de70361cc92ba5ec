//! The price table: parsing the data file and finding a model's price by provider and model id.
//!
//! # Lookup rules
//! [`PriceTable::find`] tries, in order, and stops at the first hit:
//! 1. the id as given (ASCII case ignored), against each entry's model id and aliases;
//! 2. without a LiteLLM-style provider prefix naming the same provider (`azure/gpt-4o`,
//!    `bedrock/anthropic.claude-…`, `vertex_ai/gemini-2.5-pro`) or the Gemini API's `models/` prefix;
//! 3. Bedrock only: without a cross-region inference-profile prefix (`us.`, `eu.`, `apac.`, `jp.`,
//!    `au.`, `ca.`, `us-gov.`, `global.`). A geo profile costs what the in-region model costs; where a
//!    `global.` profile is cheaper the table has its own row, which step 1 finds first;
//! 4. without a trailing release date: `-YYYY-MM-DD` (OpenAI), `-YYYYMMDD` (Anthropic), `@YYYYMMDD`
//!    (Vertex). Only full eight-digit dates are removed: OpenAI's four-digit snapshot suffixes
//!    (`gpt-3.5-turbo-0613`) were priced differently from their base model, so they must be in the
//!    table to be found. Snapshots priced unlike their base model (`gpt-4o-2024-05-13`) have their
//!    own rows, which step 1 finds first.
//!
//! Nothing else is guessed: an id that none of these find is unpriced (see [`super::Unpriced`]).

use super::money::{DecimalError, PerMtok, Ppm};
use super::Price;
use std::collections::HashMap;
use std::fmt;

/// Providers the table has prices for, as written in its `provider` column.
pub const PROVIDERS: &[&str] = &[
    "openai",
    "azure",
    "anthropic",
    "bedrock",
    "gemini",
    "vertex",
];

/// How well an entry's price was checked against its provider's own page (see the data file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Read on the provider's own pricing page.
    Official,
    /// The provider's page could not be read; at least two independent public lists agree.
    Secondary,
    /// Sources disagree or only one was found.
    Unverified,
}

impl Checked {
    pub fn as_str(&self) -> &'static str {
        match self {
            Checked::Official => "official",
            Checked::Secondary => "secondary",
            Checked::Unverified => "unverified",
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// One of [`PROVIDERS`].
    pub provider: String,
    /// The provider's model id.
    pub model: String,
    /// Other ids of the same model at the same price.
    pub aliases: Vec<String>,
    pub price: Price,
    pub checked: Checked,
}

/// Which lookup step found an entry (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    /// The id, or one of its aliases, as given.
    Exact,
    /// After removing a `provider/` or `models/` prefix.
    ProviderPrefix,
    /// After removing a Bedrock cross-region inference-profile prefix.
    RegionPrefix,
    /// After removing a trailing release date.
    DateSuffix,
}

/// A lookup's result: the entry and how it was found.
#[derive(Debug, Clone, Copy)]
pub struct Match<'t> {
    pub entry: &'t Entry,
    pub kind: MatchKind,
}

/// A parse error in the data file, with its line.
#[derive(Debug, Clone, PartialEq)]
pub struct TableError {
    /// 1-based line number.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "prices line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for TableError {}

/// The columns of the data file, in order.
pub const COLUMNS: [&str; 9] = [
    "provider",
    "model",
    "input",
    "cached_input",
    "cache_write",
    "output",
    "batch_discount",
    "checked",
    "aliases",
];

/// Prices by provider and model id.
#[derive(Debug, Default, Clone)]
pub struct PriceTable {
    entries: Vec<Entry>,
    /// `(provider, lowercase id or alias)` → index into `entries`.
    index: HashMap<(String, String), usize>,
}

impl PriceTable {
    /// Parse the data file's text: `#` comment lines, one header line naming [`COLUMNS`], then one
    /// comma-separated row per model. Every field is required; a price has at most six decimals; an
    /// id or alias may appear once per provider.
    pub fn parse(text: &str) -> Result<PriceTable, TableError> {
        let mut table = PriceTable::default();
        let mut header_seen = false;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |message: String| TableError { line, message };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = trimmed.split(',').map(str::trim).collect();
            if fields.len() != COLUMNS.len() {
                return Err(err(format!(
                    "expected {} comma-separated fields ({}), found {}",
                    COLUMNS.len(),
                    COLUMNS.join(", "),
                    fields.len()
                )));
            }
            if !header_seen {
                if fields != COLUMNS {
                    return Err(err(format!(
                        "the first row must be the header: {}",
                        COLUMNS.join(", ")
                    )));
                }
                header_seen = true;
                continue;
            }
            if let Some(col) = fields.iter().position(|f| f.is_empty()) {
                return Err(err(format!("`{}` is empty", COLUMNS[col])));
            }
            let provider = fields[0].to_ascii_lowercase();
            if !PROVIDERS.contains(&provider.as_str()) {
                return Err(err(format!(
                    "unknown provider `{provider}` (one of {})",
                    PROVIDERS.join(", ")
                )));
            }
            let price_field = |col: usize| -> Result<PerMtok, TableError> {
                PerMtok::parse_usd(fields[col])
                    .map_err(|e: DecimalError| err(format!("`{}`: {e}", COLUMNS[col])))
            };
            let price = Price {
                input: price_field(2)?,
                cached_input: price_field(3)?,
                cache_write: price_field(4)?,
                output: price_field(5)?,
                batch_discount: Ppm::parse(fields[6])
                    .map_err(|e| err(format!("`batch_discount`: {e}")))?,
            };
            let checked = match fields[7] {
                "official" => Checked::Official,
                "secondary" => Checked::Secondary,
                "unverified" => Checked::Unverified,
                other => {
                    return Err(err(format!(
                        "`checked` must be official, secondary or unverified, found `{other}`"
                    )))
                }
            };
            let aliases: Vec<String> = match fields[8] {
                "-" => Vec::new(),
                list => list.split_whitespace().map(str::to_string).collect(),
            };
            let entry = Entry {
                provider,
                model: fields[1].to_string(),
                aliases,
                price,
                checked,
            };
            let idx = table.entries.len();
            for id in std::iter::once(&entry.model).chain(&entry.aliases) {
                let key = (entry.provider.clone(), id.to_ascii_lowercase());
                if table.index.insert(key, idx).is_some() {
                    return Err(err(format!(
                        "`{id}` is listed twice for provider `{}`",
                        entry.provider
                    )));
                }
            }
            table.entries.push(entry);
        }
        if !header_seen {
            return Err(TableError {
                line: 0,
                message: "no header row".into(),
            });
        }
        Ok(table)
    }

    /// Every entry, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The price of `model` at `provider` (one of [`PROVIDERS`]; `vertex_ai` is read as `vertex`),
    /// by the rules in the module documentation.
    pub fn lookup(&self, provider: &str, model: &str) -> Option<&Price> {
        self.find(provider, model).map(|m| &m.entry.price)
    }

    /// Like [`PriceTable::lookup`], with the entry and the rule that found it.
    pub fn find(&self, provider: &str, model: &str) -> Option<Match<'_>> {
        let provider = canonical_provider(provider);
        let id = model.trim().to_ascii_lowercase();
        let exact = |id: &str| {
            self.index
                .get(&(provider.to_string(), id.to_string()))
                .map(|&i| &self.entries[i])
        };
        let found = |entry, kind| Some(Match { entry, kind });
        if let Some(e) = exact(&id) {
            return found(e, MatchKind::Exact);
        }
        let unprefixed = strip_provider_prefix(provider, &id);
        if let Some(e) = unprefixed.and_then(exact) {
            return found(e, MatchKind::ProviderPrefix);
        }
        let base = unprefixed.unwrap_or(&id);
        let regionless = (provider == "bedrock")
            .then(|| strip_region_prefix(base))
            .flatten();
        if let Some(e) = regionless.and_then(exact) {
            return found(e, MatchKind::RegionPrefix);
        }
        for candidate in [Some(base), regionless].into_iter().flatten() {
            if let Some(e) = strip_date_suffix(candidate).and_then(exact) {
                return found(e, MatchKind::DateSuffix);
            }
        }
        None
    }

    /// Entries for the `llmproxy prices MODEL` listing: first those the lookup rules find for `query`
    /// at any provider, then every other entry whose id or an alias contains `query` (ASCII case
    /// ignored), in file order.
    pub fn search(&self, query: &str) -> Vec<&Entry> {
        let mut hits: Vec<&Entry> = PROVIDERS
            .iter()
            .filter_map(|p| self.find(p, query))
            .map(|m| m.entry)
            .collect();
        let q = query.trim().to_ascii_lowercase();
        for e in &self.entries {
            let contains = std::iter::once(&e.model)
                .chain(&e.aliases)
                .any(|id| id.to_ascii_lowercase().contains(&q));
            if contains && !hits.iter().any(|h| std::ptr::eq(*h, e)) {
                hits.push(e);
            }
        }
        hits
    }
}

/// The table's name for a provider: lowercase, and LiteLLM's `vertex_ai` read as `vertex`.
fn canonical_provider(provider: &str) -> &'static str {
    let p = provider.trim().to_ascii_lowercase();
    match p.as_str() {
        "vertex_ai" => "vertex",
        other => PROVIDERS
            .iter()
            .find(|known| **known == other)
            .copied()
            .unwrap_or(""),
    }
}

/// `id` without a `provider/` prefix naming `provider` itself, or the Gemini API's `models/`.
fn strip_provider_prefix<'a>(provider: &str, id: &'a str) -> Option<&'a str> {
    let (prefix, rest) = id.split_once('/')?;
    let same = canonical_provider(prefix) == provider && !provider.is_empty();
    let gemini_resource = prefix == "models" && matches!(provider, "gemini" | "vertex");
    (same || gemini_resource).then_some(rest)
}

/// Bedrock cross-region inference-profile prefixes.
const REGION_PREFIXES: &[&str] = &[
    "us.", "eu.", "apac.", "jp.", "au.", "ca.", "us-gov.", "global.",
];

fn strip_region_prefix(id: &str) -> Option<&str> {
    REGION_PREFIXES.iter().find_map(|p| id.strip_prefix(p))
}

/// `id` without a trailing `-YYYY-MM-DD`, `-YYYYMMDD` or `@YYYYMMDD`.
fn strip_date_suffix(id: &str) -> Option<&str> {
    let b = id.as_bytes();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    let n = b.len();
    // -YYYY-MM-DD
    if n > 11
        && b[n - 11] == b'-'
        && digits(&b[n - 10..n - 6])
        && b[n - 6] == b'-'
        && digits(&b[n - 5..n - 3])
        && b[n - 3] == b'-'
        && digits(&b[n - 2..])
    {
        return Some(&id[..n - 11]);
    }
    // -YYYYMMDD or @YYYYMMDD
    if n > 9 && matches!(b[n - 9], b'-' | b'@') && digits(&b[n - 8..]) {
        return Some(&id[..n - 9]);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "provider, model, input, cached_input, cache_write, output, batch_discount, checked, aliases\n";

    #[test]
    fn dates_are_removed_only_when_whole() {
        assert_eq!(strip_date_suffix("gpt-4o-2024-08-06"), Some("gpt-4o"));
        assert_eq!(
            strip_date_suffix("claude-sonnet-4-5-20250929"),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(
            strip_date_suffix("claude-sonnet-4-5@20250929"),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(strip_date_suffix("gpt-3.5-turbo-0613"), None);
        assert_eq!(strip_date_suffix("gemini-2.0-flash-001"), None);
        assert_eq!(strip_date_suffix("20250929"), None);
        assert_eq!(strip_date_suffix("gpt-4o-2024-8-06"), None);
    }

    #[test]
    fn bad_rows_are_refused_with_their_line() {
        let cases = [
            ("openai, m, 1, 1, 1, 1, 0.5, official\n", "expected 9"),
            ("openai, m, 1, , 1, 1, 0.5, official, -\n", "`cached_input` is empty"),
            ("openai, m, -1, 1, 1, 1, 0.5, official, -\n", "must not be negative"),
            ("openai, m, 1.0000001, 1, 1, 1, 0.5, official, -\n", "at most 6 decimal"),
            ("openai, m, 1, 1, 1, 1, 1.5, official, -\n", "between 0 and 1"),
            ("openai, m, 1, 1, 1, 1, 0.5, maybe, -\n", "`checked` must be"),
            ("acme, m, 1, 1, 1, 1, 0.5, official, -\n", "unknown provider"),
            (
                "openai, m, 1, 1, 1, 1, 0.5, official, -\nopenai, x, 1, 1, 1, 1, 0.5, official, M\n",
                "listed twice",
            ),
        ];
        for (rows, want) in cases {
            let text = format!("# comment\n{HEADER}{rows}");
            let e = PriceTable::parse(&text).expect_err(rows);
            assert!(e.message.contains(want), "{rows}: {e}");
            assert!(e.line >= 3, "{e}");
        }
        assert!(PriceTable::parse("openai, m, 1, 1, 1, 1, 0.5, official, -\n").is_err());
        assert!(PriceTable::parse("# only comments\n").is_err());
    }

    #[test]
    fn same_id_at_two_providers_is_fine() {
        let text = format!(
            "{HEADER}openai, m, 1, 1, 1, 1, 0.5, official, -\nazure, m, 2, 2, 2, 2, 0.5, official, -\n"
        );
        let t = PriceTable::parse(&text).expect("parses");
        assert_eq!(
            t.lookup("openai", "m").map(|p| p.input),
            Some(PerMtok(1_000_000))
        );
        assert_eq!(
            t.lookup("azure", "M").map(|p| p.input),
            Some(PerMtok(2_000_000))
        );
        assert_eq!(t.lookup("anthropic", "m"), None);
        assert_eq!(t.lookup("nonsense", "m"), None);
    }
}
