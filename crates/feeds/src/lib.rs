//! Exchange feeds. Exchanges are DATA: an [`ExchangeDefinition`](beast_core::ExchangeDefinition)
//! is compiled once ([`CompiledDefinition`]) and run by one generic WebSocket connector; no
//! exchange has code of its own here. Frames are normalized at the edge into
//! [`Tick`](beast_core::Tick)s and handed to a [`TickSink`](beast_core::TickSink) (the book).
//!
//! - `definition`: validation and JSONPath compilation of a definition, with errors naming the field.
//! - `extract`: one frame → trades, a heartbeat to answer, or nothing.
//! - `timefmt`: trade timestamps in every format exchanges use.
//! - `feed`: one running exchange: its pairs, their last live price, its counters.
//! - `connector`: one WebSocket connection: subscribe, keep-alive, liveness, trade-id
//!   de-duplication, reconnect with backoff.
//! - `rest`: the REST ticker, for quiet pairs, fallback and on-demand assets.
//! - `manager`: the feeds of a node, changed live from the stored rows.

mod connector;
pub mod definition;
pub mod extract;
mod feed;
pub mod manager;
pub mod rest;
pub mod timefmt;

pub use definition::{CompiledDefinition, DefinitionError, validate_mapping};
pub use extract::{Frame, RawTrade};
pub use feed::{FeedStats, FeedStatus};
pub use manager::{FeedManager, FeedOptions, FetchError, Redirect};
pub use rest::RestClient;
