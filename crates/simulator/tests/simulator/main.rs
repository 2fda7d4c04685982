//! The simulator driven by real WebSocket and HTTP clients, one integration binary: each
//! exchange's wire protocol ([`exchanges`]) and the faults that break it ([`faults`]), all through
//! the one harness in [`helpers`].

// Helpers outside `#[test]` functions: panicking on a broken expectation is how these fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod exchanges;
mod faults;
mod helpers;
