//! Exchange feeds. Exchanges are DATA: an [`ExchangeDefinition`](beast_core::ExchangeDefinition)
//! is compiled once ([`CompiledDefinition`]) and run by one generic WebSocket connector; no
//! exchange has code of its own here. Frames are normalized at the edge into
//! [`Tick`](beast_core::Tick)s and handed to a [`TickSink`](beast_core::TickSink) (the book).
//!
//! - `definition`: validation and JSONPath compilation of a definition, with errors naming the field.
//! - `extract`: one frame → trades, a heartbeat to answer, or nothing.
//! - `timefmt`: trade timestamps in every format exchanges use.
//! - `connector`: one WebSocket connection: subscribe, keep-alive, liveness, reconnect with backoff.
//! - `registry`: the running feeds of a node and their live status.

pub mod connector;
pub mod definition;
pub mod extract;
pub mod registry;
pub mod timefmt;

pub use definition::{CompiledDefinition, DefinitionError};
pub use extract::{Frame, RawTrade};
pub use registry::{FeedRegistry, FeedStats, FeedStatus};
