//! Trinity Beast: a self-hosted real-time crypto price API in one binary.
//!
//! # Layout
//!
//! ```text
//! exchange frames ─► feeds ─► book ─► api (HTTP) ─► usage ─► store
//!   (beast-feeds:     (beast-book:     (beast-api:     (beast-usage:   (beast-store:
//!    definitions are   latest trade     keys, limits,   bounded         SQLite, versioned
//!    data, one         per (asset,      quotas, one     channel →       migrations, seeds)
//!    generic           source), median  file per        batch writer)
//!    connector)        of fresh, pre-   endpoint)
//!                      rendered bytes)
//! beast-simulator: the six exchanges' wire protocols on loopback, for tests and offline demos.
//! beast-core: the shared vocabulary (prices, ticks, definitions, usage events, error table).
//! ```
//!
//! This crate is the binary: `main.rs` is thin, [`app`] wires the components, [`commands`]
//! holds one module per subcommand, [`config`] the layered settings.

pub mod app;
pub mod cli;
pub mod commands;
pub mod config;
pub mod telemetry;
