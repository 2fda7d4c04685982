//! Following a part of the configuration in the store: the store bumps an area's revision on
//! every write made through it, by any process, and a node polls that one row to reload.

use std::{sync::Arc, time::Duration};

use beast_core::Ticks;
use beast_store::{Area, Store};
use tokio_util::sync::CancellationToken;

/// Calls `reload(revision)` whenever the revision of `area` moves past `seen`, checking every
/// `every`, until `stop`. A reload that fails (returns false) is tried again at the next check.
pub async fn follow<F>(
    store: Arc<dyn Store>,
    area: Area,
    mut seen: i64,
    every: Duration,
    stop: CancellationToken,
    mut reload: impl FnMut(i64) -> F,
) where
    F: Future<Output = bool>,
{
    let mut ticks = Ticks::new(every, stop);
    while ticks.next().await {
        match store.revision(area).await {
            Ok(revision) if revision != seen => {
                if reload(revision).await {
                    seen = revision;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(area = area.as_str(), error = %e, "cannot read the revision"),
        }
    }
}
