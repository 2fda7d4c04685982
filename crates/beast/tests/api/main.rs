//! End-to-end tests: the whole node in-process (`spawn_app`) with the exchange simulator,
//! real HTTP clients, a real SQLite store; and the real `beast` binary driven as a user would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;
mod connections;
mod exchanges;
mod faults;
mod helpers;
mod keys;
mod metering;
mod prices;
mod reports;
mod stress_stats;
mod udp;
