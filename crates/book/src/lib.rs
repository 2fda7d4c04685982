//! The price book: the latest trade per (asset, source), and for each asset a pre-rendered
//! answer (median of fresh sources, with provenance) rebuilt when a price changes or when a
//! source ages out, never per request. Readers are lock-free.

pub mod aggregate;
pub mod template;

use std::sync::Arc;

use arc_swap::ArcSwap;
use beast_core::{Tick, TickSink};
use foldhash::HashMap;
use parking_lot::Mutex;

pub use aggregate::{Answer, SourcePrice};
pub use template::Template;

/// What the book knows of an asset right now.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// The rendered answer, shared: serving it copies no template.
    Fresh(Arc<Answer>),
    /// Only stale sources; `age_ms` is the age of the newest one.
    Stale { age_ms: i64 },
    /// The asset is known (mapped) but no price has arrived yet.
    NoPrice,
    /// The asset is not in the book.
    Unknown,
}

/// What readers see of one asset: rebuilt by writers, swapped in whole.
#[derive(Debug, Default)]
struct View {
    aggregate: Option<Arc<Answer>>,
    /// Pinned answers, one per source that has a fresh price.
    pinned: Vec<(Arc<str>, Arc<Answer>)>,
    /// When each source's price arrived, for the age of a stale answer.
    received_ms: Vec<(Arc<str>, i64)>,
    /// Rebuild once the clock reaches this: a source will have aged out.
    rebuild_at_ms: i64,
}

struct AssetBook {
    asset: Arc<str>,
    /// Latest trade per source. Only feeds (one task per source) and the rare age-out rebuild
    /// lock it, briefly and never across an await; readers never touch it.
    sources: Mutex<Vec<SourcePrice>>,
    /// Readers load this without locking.
    view: ArcSwap<View>,
}

impl AssetBook {
    fn new(asset: Arc<str>) -> Arc<Self> {
        Arc::new(Self {
            asset,
            sources: Mutex::new(Vec::new()),
            view: ArcSwap::default(),
        })
    }

    /// Renders the answers anew. `changed` is the one source whose price just changed: until
    /// a source ages out, the other sources' pinned answers are still right and are kept.
    fn rebuild(
        &self,
        sources: &[SourcePrice],
        changed: Option<&str>,
        now_ms: i64,
        max_age_ms: i64,
    ) {
        let old = self.view.load();
        let nothing_aged = now_ms < old.rebuild_at_ms;
        let pinned = sources
            .iter()
            .filter_map(|s| {
                let unchanged = changed.is_some_and(|c| c != &*s.source);
                if nothing_aged && unchanged {
                    // Not pinned before means not fresh before, and freshness only decays.
                    return old.pinned.iter().find(|(t, _)| *t == s.source).cloned();
                }
                aggregate::answer(&self.asset, sources, Some(&s.source), now_ms, max_age_ms)
                    .map(|a| (s.source.clone(), Arc::new(a)))
            })
            .collect();
        self.view.store(Arc::new(View {
            aggregate: aggregate::answer(&self.asset, sources, None, now_ms, max_age_ms)
                .map(Arc::new),
            pinned,
            received_ms: sources
                .iter()
                .map(|s| (s.source.clone(), s.received_ms))
                .collect(),
            rebuild_at_ms: aggregate::fresh_until(sources, now_ms, max_age_ms),
        }));
    }
}

/// The book of every asset this node serves.
pub struct Book {
    /// Asset registry. Copy-on-write: assets are added rarely, looked up on every request.
    assets: ArcSwap<HashMap<Arc<str>, Arc<AssetBook>>>,
    /// Serializes registry writers (the copy-on-write above).
    adding: Mutex<()>,
    max_age_ms: i64,
}

impl Book {
    /// A book where a source is fresh for `max_age_ms` after its last trade arrived.
    pub fn new(max_age_ms: i64) -> Self {
        Self {
            assets: ArcSwap::default(),
            adding: Mutex::new(()),
            max_age_ms,
        }
    }

    /// Makes exactly these assets known: new ones are added, absent ones forgotten (an asset
    /// that is no longer mapped answers "unknown"), the others keep their prices.
    pub fn set_assets<'a>(&self, assets: impl IntoIterator<Item = &'a str>) {
        let _guard = self.adding.lock();
        let old = self.assets.load();
        let map = assets
            .into_iter()
            .map(|asset| match old.get_key_value(asset) {
                Some((name, book)) => (name.clone(), book.clone()),
                None => {
                    let name: Arc<str> = Arc::from(asset);
                    (name.clone(), AssetBook::new(name))
                }
            })
            .collect();
        self.assets.store(Arc::new(map));
    }

    /// The answer for `asset` (pinned to one source tag, if given) as of `now_ms`.
    pub fn lookup(&self, asset: &str, source: Option<&str>, now_ms: i64) -> Lookup {
        let assets = self.assets.load();
        let Some(book) = assets.get(asset) else {
            return Lookup::Unknown;
        };
        let mut view = book.view.load();
        if now_ms >= view.rebuild_at_ms {
            let sources = book.sources.lock();
            // Another reader may have rebuilt while this one waited for the lock.
            if now_ms >= book.view.load().rebuild_at_ms {
                book.rebuild(&sources, None, now_ms, self.max_age_ms);
            }
            drop(sources);
            view = book.view.load();
        }
        let answer = match source {
            None => view.aggregate.as_ref(),
            Some(tag) => view
                .pinned
                .iter()
                .find(|(s, _)| &**s == tag)
                .map(|(_, a)| a),
        };
        if let Some(answer) = answer {
            return Lookup::Fresh(answer.clone());
        }
        // A stale answer tells the age of the newest price it could have used.
        let newest = view
            .received_ms
            .iter()
            .filter(|(s, _)| source.is_none_or(|tag| &**s == tag))
            .map(|(_, ms)| *ms)
            .max();
        match newest {
            Some(newest) => Lookup::Stale {
                age_ms: (now_ms - newest).max(0),
            },
            None => Lookup::NoPrice,
        }
    }

    /// Applies a price received at `tick.time_received_ms`. A price for an asset the book does
    /// not know (no longer mapped) is dropped.
    pub fn apply_at(&self, tick: Tick, now_ms: i64) {
        let assets = self.assets.load();
        let Some(book) = assets.get(&*tick.asset) else {
            return;
        };
        let mut sources = book.sources.lock();
        let incoming = SourcePrice {
            source: tick.source,
            quote: tick.quote,
            price: tick.price,
            time_exchange_ms: tick.time_exchange_ms,
            // History replayed on subscribe is as old as the trade itself.
            received_ms: if tick.replayed {
                tick.time_exchange_ms
            } else {
                tick.time_received_ms
            },
            replayed: tick.replayed,
        };
        let changed = incoming.source.clone();
        match sources.iter_mut().find(|s| s.source == incoming.source) {
            Some(existing) => {
                let newer = incoming.time_exchange_ms >= existing.time_exchange_ms;
                if incoming.replayed || (!existing.replayed && !newer) {
                    return;
                }
                *existing = incoming;
            }
            None => {
                sources.push(incoming);
                sources.sort_by(|a, b| a.source.cmp(&b.source));
            }
        }
        book.rebuild(&sources, Some(&changed), now_ms, self.max_age_ms);
    }
}

impl TickSink for Book {
    fn apply(&self, tick: Tick) {
        let now = tick.time_received_ms;
        self.apply_at(tick, now);
    }
}

#[cfg(test)]
mod tests;
