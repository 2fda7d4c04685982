//! Serving prices to key holders. `state` holds what every protocol shares (book, keys,
//! usage sink, catalog) and the one lookup every protocol answers with; `keys` authenticates,
//! rate-limits and enforces quotas in memory; `http` has one file per endpoint; `admin` is the
//! admin API; `manage` changes exchanges and mappings live; `counters` counts what the node
//! does and bounds the price requests in flight.

pub mod admin;
pub mod catalog;
pub mod counters;
mod follow;
pub mod http;
pub mod keys;
pub mod manage;
pub mod peers;
pub mod report;
pub mod state;
pub mod udp;

pub use admin::AdminKey;
pub use catalog::Catalog;
pub use counters::RuntimeCounters;
pub use keys::KeyRing;
pub use state::{AppState, Shared};

/// The most usage rows one request writes (a `/prices` request of as many assets as it may
/// name): a request takes room for all of its rows at once, so the usage channel must hold
/// at least this many.
pub const MOST_ROWS_PER_REQUEST: usize = http::prices::MAX_ASSETS;

/// A server-side failure as the client sees it: `what` went wrong, the cause in the log only.
pub(crate) fn internal(what: &str, cause: &dyn std::fmt::Display) -> beast_core::ApiError {
    tracing::error!(error = %cause, "{what}");
    beast_core::ApiError::Internal(format!("{what}; see the server log"))
}
