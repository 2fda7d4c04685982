//! `summary` reports: totals, errors, cache tiers and latency percentiles, overall and per
//! asset, source, protocol and UTC day. Whole days already rolled up are read from
//! `usage_daily`; only the rest of the range (today, and partial days at either end) is read
//! from raw rows, so a summary over months stays fast however many rows it covers.

use std::collections::BTreeMap;

use beast_core::{CacheTier, DAY_MS, day_name, day_start_ms, now_ms, rfc3339_ms};
use beast_store::{RollupRow, Store, StoreError, UsageFilter, UsageRow};
use futures_util::TryStreamExt;

use crate::{
    query::Format,
    sketch::{BadSketch, Sketch},
    table::{Cell, Column, TableWriter},
};

/// Why a summary could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a stored rollup is unreadable: {0}")]
    BadRollup(#[from] BadSketch),
}

/// Request counts and latency totals, as one raw row or rollup row gives them and as a group
/// (or a rollup) adds them up.
#[derive(Default, Clone, Copy)]
pub(crate) struct Counts {
    pub requests: i64,
    pub errors: i64,
    pub memory: i64,
    pub rest: i64,
    pub latency_sum_us: i64,
    pub latency_max_us: i64,
}

impl Counts {
    /// One raw usage row's counts.
    pub fn of_row(r: &UsageRow) -> Self {
        Self {
            requests: 1,
            errors: i64::from(r.status >= 400),
            memory: i64::from(r.cache_tier == CacheTier::Memory.as_str()),
            rest: i64::from(r.cache_tier == CacheTier::Rest.as_str()),
            latency_sum_us: i64::from(r.latency_us),
            latency_max_us: i64::from(r.latency_us),
        }
    }

    /// One rollup row's counts.
    pub fn of_rollup(r: &RollupRow) -> Self {
        Self {
            requests: r.requests,
            errors: if r.status >= 400 { r.requests } else { 0 },
            memory: r.memory,
            rest: r.rest,
            latency_sum_us: r.latency_sum_us,
            latency_max_us: r.latency_max_us,
        }
    }

    pub fn add(&mut self, c: &Counts) {
        self.requests += c.requests;
        self.errors += c.errors;
        self.memory += c.memory;
        self.rest += c.rest;
        self.latency_sum_us += c.latency_sum_us;
        self.latency_max_us = self.latency_max_us.max(c.latency_max_us);
    }
}

/// The figures of one group of requests.
#[derive(Default)]
struct Group {
    counts: Counts,
    latency: Sketch,
}

impl Group {
    /// Adds a row's counts and its latencies as `(value, count)` pairs.
    fn add(&mut self, c: &Counts, latency: &[(u64, u64)]) {
        self.counts.add(c);
        self.latency.record_pairs(latency);
    }

    fn cells<'a>(&self, group: &'a str, name: &'a str) -> [Cell<'a>; 13] {
        let c = &self.counts;
        let answered = c.memory + c.rest;
        let ratio = |n: i64, d: i64| (d > 0).then(|| n as f64 / d as f64);
        [
            Cell::Str(group),
            Cell::Str(name),
            Cell::Int(c.requests),
            Cell::Int(c.errors),
            Cell::Int(c.memory),
            Cell::Int(c.rest),
            Cell::Int(c.requests - answered),
            Cell::Ratio(ratio(c.memory, answered)),
            Cell::Int(self.latency.quantile(0.50) as i64),
            Cell::Int(self.latency.quantile(0.95) as i64),
            Cell::Int(self.latency.quantile(0.99) as i64),
            Cell::Int(c.latency_max_us),
            Cell::Int(if c.requests > 0 {
                c.latency_sum_us / c.requests
            } else {
                0
            }),
        ]
    }
}

/// Columns of a summary row (name, text width). `none` counts requests nothing answered
/// (errors); `memory_hit_rate` is memory / (memory + rest).
pub const SUMMARY_COLUMNS: &[Column] = &[
    ("group", 8),
    ("name", 12),
    ("requests", 9),
    ("errors", 7),
    ("memory", 9),
    ("rest", 6),
    ("none", 7),
    ("memory_hit_rate", 15),
    ("latency_p50_us", 14),
    ("latency_p95_us", 14),
    ("latency_p99_us", 14),
    ("latency_max_us", 14),
    ("latency_mean_us", 15),
];

/// A usage summary over a filter.
#[derive(Default)]
pub struct Summary {
    from_ms: i64,
    to_ms: i64,
    total: Group,
    by_asset: BTreeMap<String, Group>,
    by_source: BTreeMap<String, Group>,
    by_protocol: BTreeMap<String, Group>,
    by_day: BTreeMap<i64, Group>,
}

/// Adds to the group named `name`, created the first time: the name is copied only then,
/// not for every row.
fn add_to(groups: &mut BTreeMap<String, Group>, name: &str, c: &Counts, latency: &[(u64, u64)]) {
    match groups.get_mut(name) {
        Some(g) => g.add(c, latency),
        None => {
            let mut g = Group::default();
            g.add(c, latency);
            groups.insert(name.to_owned(), g);
        }
    }
}

impl Summary {
    fn add(&mut self, key: (i64, &str, &str, &str), c: &Counts, latency: &[(u64, u64)]) {
        let (day_ms, asset, source, protocol) = key;
        self.total.add(c, latency);
        add_to(&mut self.by_asset, asset, c, latency);
        for tag in source.split(',').filter(|t| !t.is_empty()) {
            add_to(&mut self.by_source, tag, c, latency);
        }
        add_to(&mut self.by_protocol, protocol, c, latency);
        self.by_day.entry(day_ms).or_default().add(c, latency);
    }

    fn add_raw(&mut self, r: &UsageRow) {
        let counts = Counts::of_row(r);
        let key = (day_start_ms(r.ts_ms), &*r.asset, &*r.source, &*r.protocol);
        self.add(key, &counts, &[(u64::from(r.latency_us), 1)]);
    }

    fn add_rollup(&mut self, r: &RollupRow) -> Result<(), BadSketch> {
        let pairs = Sketch::parse(&r.latency_sketch)?;
        let key = (r.day_ms, &*r.asset, &*r.source, &*r.protocol);
        self.add(key, &Counts::of_rollup(r), &pairs);
        Ok(())
    }

    /// Groups in the answer (the total counts as one).
    pub fn groups(&self) -> usize {
        1 + self.by_asset.len() + self.by_source.len() + self.by_protocol.len() + self.by_day.len()
    }

    /// The summary in a format. JSON is an object with `from`, `to`, `total` and one array
    /// per breakdown; the others are one table whose rows are the same entries, with `group`
    /// saying which breakdown a row belongs to (`total`, `asset`, `source`, `protocol`, `day`).
    pub fn render(&self, format: Format) -> Vec<u8> {
        let sections: [(&str, Vec<(String, &Group)>); 4] = [
            ("asset", named(&self.by_asset)),
            ("source", named(&self.by_source)),
            ("protocol", named(&self.by_protocol)),
            (
                "day",
                self.by_day.iter().map(|(d, g)| (day_name(*d), g)).collect(),
            ),
        ];
        if format != Format::Json {
            let mut w = TableWriter::new(format, SUMMARY_COLUMNS);
            w.row(&self.total.cells("total", "all"));
            for (group, entries) in &sections {
                for (name, g) in entries {
                    w.row(&g.cells(group, name));
                }
            }
            return w.take();
        }
        let instant = |ms: i64| {
            if ms == 0 || ms == i64::MAX {
                "null".to_owned()
            } else {
                format!("\"{}\"", rfc3339_ms(ms))
            }
        };
        let mut out = format!(
            "{{\"from\":{},\"to\":{},\"total\":",
            instant(self.from_ms),
            instant(self.to_ms)
        )
        .into_bytes();
        let mut w = TableWriter::new(Format::Json, SUMMARY_COLUMNS);
        w.row(&self.total.cells("total", "all"));
        out.extend(w.take());
        for (group, entries) in &sections {
            out.extend(format!(",\"by_{group}\":[").into_bytes());
            let mut w = TableWriter::new(Format::Json, SUMMARY_COLUMNS);
            for (name, g) in entries {
                w.row(&g.cells(group, name));
            }
            out.extend(w.take());
            out.push(b']');
        }
        out.push(b'}');
        out
    }
}

/// The end of a summary's range: an open range ends a day after now.
fn bounded_to(filter: &UsageFilter) -> i64 {
    filter.to_ms.min(now_ms().saturating_add(DAY_MS))
}

/// A breakdown's entries by name, in order.
fn named(groups: &BTreeMap<String, Group>) -> Vec<(String, &Group)> {
    groups.iter().map(|(k, g)| (k.clone(), g)).collect()
}

fn ceil_day(ms: i64) -> i64 {
    let start = day_start_ms(ms);
    if start == ms {
        ms
    } else {
        start.saturating_add(DAY_MS)
    }
}

/// Summarizes the usage a filter selects: whole days before the rollup mark from rollups,
/// the rest from raw rows. Raw rows older than the retention are gone, so a partial day
/// there counts only what its rollup cannot give: nothing (ask for whole days).
pub async fn summarize(store: &dyn Store, filter: &UsageFilter) -> Result<Summary, SummaryError> {
    let (from, to) = (filter.from_ms, bounded_to(filter));
    let mut summary = Summary {
        from_ms: filter.from_ms,
        to_ms: filter.to_ms,
        ..Summary::default()
    };
    if to <= from {
        return Ok(summary);
    }
    let mut raw_ranges = vec![(from, to)];
    if let Some(rolled) = store.rolled_until().await? {
        let (d0, d1) = (ceil_day(from), day_start_ms(to.min(rolled)));
        if d0 < d1 {
            let days = filter.between(d0, d1);
            let mut rollups = store.rollups(&days);
            while let Some(r) = rollups.try_next().await? {
                summary.add_rollup(&r)?;
            }
            raw_ranges = vec![(from, d0), (d1, to)];
        }
    }
    for (a, b) in raw_ranges.into_iter().filter(|(a, b)| a < b) {
        let range = filter.between(a, b);
        let mut rows = store.usage_rows(&range, None, None);
        while let Some(r) = rows.try_next().await? {
            summary.add_raw(&r);
        }
    }
    Ok(summary)
}
