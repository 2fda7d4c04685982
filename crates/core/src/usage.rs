//! The usage event: one per metered request, whatever the protocol.

use std::sync::Arc;

/// The one of `all` whose name is `text`, in any case and trimmed: how every fixed name in a
/// request is read (protocols, report names and formats).
pub fn by_name<T: Copy>(all: &[T], name: impl Fn(T) -> &'static str, text: &str) -> Option<T> {
    let text = text.trim();
    all.iter()
        .copied()
        .find(|v| name(*v).eq_ignore_ascii_case(text))
}

/// Protocol a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Udp,
    Ws,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Http, Protocol::Udp, Protocol::Ws];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Udp => "udp",
            Protocol::Ws => "ws",
        }
    }

    /// The protocol named `text` (`http`, `udp`, `ws`, any case).
    pub fn parse(text: &str) -> Option<Protocol> {
        by_name(&Self::ALL, Self::as_str, text)
    }
}

/// Which tier of the lookup answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheTier {
    /// The in-process price book.
    Memory,
    /// Fetched from an exchange's REST ticker for this request (on demand).
    Rest,
    /// Nothing answered (errors).
    None,
}

impl CacheTier {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheTier::Memory => "memory",
            CacheTier::Rest => "rest",
            CacheTier::None => "none",
        }
    }
}

/// One metered request.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageEvent {
    pub ts_ms: i64,
    pub key_id: i64,
    pub asset: Arc<str>,
    /// Source tags that produced the answer, comma-joined (empty for errors).
    pub source: Arc<str>,
    pub protocol: Protocol,
    pub node: Arc<str>,
    pub status: u16,
    pub latency_us: u32,
    pub cache_tier: CacheTier,
}
