//! Aggregation of one asset's sources: the served price is the median of the fresh sources
//! of one quote currency (USD first, else the best-covered quote; USDT is never called USD),
//! with the count, spread, ages and every source's own price as provenance.

use std::sync::Arc;

use beast_core::Price;
use rust_decimal::Decimal;

use crate::template::{Template, TemplateWriter};

/// The latest trade of one source for one asset.
#[derive(Debug, Clone)]
pub struct SourcePrice {
    pub source: Arc<str>,
    pub quote: Arc<str>,
    pub price: Price,
    pub time_exchange_ms: i64,
    pub received_ms: i64,
    /// Known only from a snapshot replay: history, never fresh.
    pub replayed: bool,
}

impl SourcePrice {
    pub fn is_fresh(&self, now_ms: i64, max_age_ms: i64) -> bool {
        !self.replayed && now_ms - self.received_ms < max_age_ms
    }
}

/// A rendered answer and what it was built from.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The asset, shared with the book (usage rows reuse it without allocating).
    pub asset: Arc<str>,
    pub template: Template,
    /// Source tags used, comma-joined (what usage rows record).
    pub sources_used: Arc<str>,
}

/// Median of a sorted, non-empty slice; exact text when it is one source's price.
fn median(sorted: &[&SourcePrice]) -> Price {
    let n = sorted.len();
    let (a, b) = (&sorted[(n - 1) / 2].price, &sorted[n / 2].price);
    if a.value() == b.value() {
        a.clone()
    } else {
        Price::from_decimal((a.value() + b.value()) / Decimal::TWO)
    }
}

/// Picks the quote to serve: USD if any fresh source has it, else the quote with the most
/// fresh sources (ties broken alphabetically so the answer is stable).
fn chosen_quote<'a>(fresh: &[&'a SourcePrice]) -> Option<&'a str> {
    if fresh.iter().any(|s| &*s.quote == "USD") {
        return Some("USD");
    }
    let mut quotes: Vec<&str> = fresh.iter().map(|s| &*s.quote).collect();
    quotes.sort_unstable();
    quotes.dedup();
    quotes.into_iter().max_by(|a, b| {
        let count = |q: &str| fresh.iter().filter(|s| &*s.quote == q).count();
        count(a).cmp(&count(b)).then_with(|| b.cmp(a))
    })
}

/// Renders the answer from the fresh sources among `all` (or only `pinned`, if given).
/// `None` when no source qualifies.
pub fn answer(
    asset: &Arc<str>,
    all: &[SourcePrice],
    pinned: Option<&str>,
    now_ms: i64,
    max_age_ms: i64,
) -> Option<Answer> {
    let fresh: Vec<&SourcePrice> = all
        .iter()
        .filter(|s| s.is_fresh(now_ms, max_age_ms) && pinned.is_none_or(|p| &*s.source == p))
        .collect();
    let quote = chosen_quote(&fresh)?;
    let mut used: Vec<&SourcePrice> = fresh.into_iter().filter(|s| &*s.quote == quote).collect();
    used.sort_by_key(|s| s.price.value());
    let price = median(&used);
    let spread = Price::from_decimal(used[used.len() - 1].price.value() - used[0].price.value());
    let oldest = used.iter().map(|s| s.received_ms).min().unwrap_or(now_ms);
    let newest_trade = used
        .iter()
        .map(|s| s.time_exchange_ms)
        .max()
        .unwrap_or(now_ms);

    let mut w = TemplateWriter::default();
    w.raw("{\"asset\":").string(asset);
    w.raw(",\"price\":").string(price.text());
    w.raw(",\"quote\":").string(quote);
    w.raw(",\"sources_used\":").int(used.len() as i64);
    w.raw(",\"spread\":").string(spread.text());
    w.raw(",\"age_ms\":").age_since(oldest);
    w.raw(",\"time_ms\":").int(newest_trade);
    w.raw(",\"sources\":[");
    let shown = all
        .iter()
        .filter(|s| pinned.is_none_or(|p| &*s.source == p));
    for (i, s) in shown.enumerate() {
        let is_used = used.iter().any(|u| u.source == s.source);
        w.raw(if i == 0 {
            "{\"source\":"
        } else {
            ",{\"source\":"
        })
        .string(&s.source);
        w.raw(",\"price\":").string(s.price.text());
        w.raw(",\"quote\":").string(&s.quote);
        w.raw(",\"age_ms\":").age_since(s.received_ms);
        w.raw(",\"time_ms\":").int(s.time_exchange_ms);
        w.raw(",\"fresh\":").raw(if s.is_fresh(now_ms, max_age_ms) {
            "true"
        } else {
            "false"
        });
        w.raw(",\"used\":")
            .raw(if is_used { "true}" } else { "false}" });
    }
    w.raw("]}");
    let sources_used = used
        .iter()
        .map(|s| &*s.source)
        .collect::<Vec<_>>()
        .join(",");
    Some(Answer {
        asset: asset.clone(),
        template: w.finish(),
        sources_used: sources_used.into(),
    })
}

/// When the set of fresh sources next changes by the clock alone (unix ms).
pub fn fresh_until(all: &[SourcePrice], now_ms: i64, max_age_ms: i64) -> i64 {
    all.iter()
        .filter(|s| s.is_fresh(now_ms, max_age_ms))
        .map(|s| s.received_ms + max_age_ms)
        .min()
        .unwrap_or(i64::MAX)
}
