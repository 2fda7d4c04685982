//! One WebSocket connection of one exchange, run from its definition alone: connect, wait
//! `connect_delay_ms`, subscribe (everything, after every reconnect), keep alive (`ping_*`,
//! heartbeat replies), enforce the liveness deadline, drop trades whose id was already seen
//! (snapshots replayed on resubscribe), and reconnect with backoff when anything ends the
//! session, a panic in it included.

use std::{
    any::Any,
    collections::{HashMap, VecDeque},
    hash::{DefaultHasher, Hash, Hasher},
    panic::AssertUnwindSafe,
    sync::Arc,
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBuilder};
use beast_core::now_ms;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::time::{Instant, interval_at, sleep, timeout, timeout_at};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::{
    Frame, RawTrade,
    feed::{Feed, PriceUpdate},
};

/// A session that lasted this long resets the backoff to its minimum.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Trade ids remembered per pair: far more than any exchange replays on subscribe.
const RECENT_IDS: usize = 256;

/// The last trade ids seen on one pair (hashed), oldest first.
#[derive(Default)]
struct RecentIds(VecDeque<u64>);

impl RecentIds {
    /// Remembers `id`; false if it was already seen.
    fn insert(&mut self, id: &str) -> bool {
        let mut hasher = DefaultHasher::new();
        id.hash(&mut hasher);
        let hash = hasher.finish();
        if self.0.contains(&hash) {
            return false;
        }
        if self.0.len() == RECENT_IDS {
            self.0.pop_front();
        }
        self.0.push_back(hash);
        true
    }
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("stopped")]
    Stopped,
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("no frame for {0:?}: connection presumed dead")]
    Silent(Duration),
    #[error("closed by the exchange")]
    Closed,
    #[error("panicked: {0}")]
    Panicked(String),
    #[error(transparent)]
    WebSocket(#[from] tungstenite::Error),
}

/// One connection's work: its shard of the exchange's pairs.
pub(crate) struct Connection {
    feed: Arc<Feed>,
    shard: usize,
    symbols: Vec<String>,
    /// Per pair index; outlives sessions so a replay after a reconnect is recognised.
    recent: HashMap<usize, RecentIds>,
}

impl Connection {
    pub fn new(feed: Arc<Feed>, shard: usize, symbols: Vec<String>) -> Self {
        Self {
            feed,
            shard,
            symbols,
            recent: HashMap::new(),
        }
    }

    /// Runs until `cancel` fires, reconnecting with exponential backoff (1 s → 60 s, jitter).
    pub async fn run(mut self, cancel: CancellationToken) {
        let name = self.feed.def.def.name.clone();
        let policy = ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(Duration::from_secs(60))
            .with_jitter()
            .without_max_times();
        let mut backoff = policy.build();
        loop {
            let started = Instant::now();
            // A panic ends only this session: the connection reconnects as after any other end.
            let end = caught(self.session(&cancel))
                .await
                .unwrap_or_else(SessionEnd::Panicked);
            self.feed.set_shard_up(self.shard, false);
            match end {
                SessionEnd::Stopped => return,
                end => tracing::warn!(exchange = %name, reason = %end, "feed connection ended"),
            }
            if started.elapsed() >= HEALTHY_AFTER {
                backoff = policy.build();
            }
            let delay = backoff.next().unwrap_or(Duration::from_secs(60));
            self.feed.stats.reconnect();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = sleep(delay) => {}
            }
        }
    }

    async fn session(&mut self, cancel: &CancellationToken) -> SessionEnd {
        let def = self.feed.def.clone();
        let d = &def.def;
        let connect = tokio_tungstenite::connect_async(d.ws_url.as_str());
        let mut ws = tokio::select! {
            _ = cancel.cancelled() => return SessionEnd::Stopped,
            r = timeout(CONNECT_TIMEOUT, connect) => match r {
                Err(_) => return SessionEnd::ConnectTimeout(CONNECT_TIMEOUT),
                Ok(Err(e)) => return e.into(),
                Ok(Ok((ws, _))) => ws,
            },
        };
        tokio::select! {
            _ = cancel.cancelled() => return SessionEnd::Stopped,
            _ = sleep(Duration::from_millis(d.connect_delay_ms)) => {}
        }
        for msg in def.subscribe_messages(&self.symbols, now_ms()) {
            if let Err(e) = ws.send(Message::Text(msg.into())).await {
                return e.into();
            }
        }
        self.feed.set_shard_up(self.shard, true);
        tracing::info!(exchange = %d.name, symbols = self.symbols.len(), "feed subscribed");

        let ping_period = Duration::from_secs(d.ping_interval_s.max(1));
        let mut ping =
            (d.ping_interval_s > 0).then(|| interval_at(Instant::now() + ping_period, ping_period));
        let liveness = Duration::from_secs(d.liveness_timeout_s);
        // Only a frame from the exchange moves the deadline: our own pings must not keep a
        // dead connection alive.
        let mut deadline = Instant::now() + liveness;
        enum Event {
            Stop,
            Ping,
            Frame(Result<Option<Result<Message, tungstenite::Error>>, tokio::time::error::Elapsed>),
        }
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => Event::Stop,
                _ = async { match ping.as_mut() { Some(p) => p.tick().await, None => std::future::pending().await } } => Event::Ping,
                r = timeout_at(deadline, ws.next()) => Event::Frame(r),
            };
            let outgoing = match event {
                Event::Stop => {
                    let _ = ws.close(None).await;
                    return SessionEnd::Stopped;
                }
                Event::Ping => Some(match def.ping_text(now_ms()) {
                    Some(text) => Message::Text(text.into()),
                    None => Message::Ping(Default::default()),
                }),
                Event::Frame(Err(_)) => return SessionEnd::Silent(liveness),
                Event::Frame(Ok(None)) => return SessionEnd::Closed,
                Event::Frame(Ok(Some(Err(e)))) => return e.into(),
                Event::Frame(Ok(Some(Ok(msg)))) => {
                    deadline = Instant::now() + liveness;
                    self.feed.stats.frame_seen();
                    match msg {
                        Message::Text(text) => self.handle_text(text.as_str()),
                        Message::Binary(bytes) => match std::str::from_utf8(&bytes) {
                            Ok(text) => self.handle_text(text),
                            Err(e) => {
                                self.skipped(&e, "binary frame skipped");
                                None
                            }
                        },
                        Message::Close(_) => return SessionEnd::Closed,
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => None,
                    }
                }
            };
            if let Some(msg) = outgoing
                && let Err(e) = ws.send(msg).await
            {
                return e.into();
            }
        }
    }

    /// Handles one text frame; returns a reply to send, if any.
    fn handle_text(&mut self, text: &str) -> Option<Message> {
        match self.feed.def.read_frame(text) {
            Ok(Frame::Trades {
                trades,
                replayed,
                refused,
            }) => {
                for e in refused {
                    self.skipped(&e, "trade skipped");
                }
                let received = now_ms();
                for trade in trades {
                    self.deliver(trade, replayed, received);
                }
                None
            }
            Ok(Frame::Heartbeat(reply)) => Some(Message::Text(reply.into())),
            Ok(Frame::Text | Frame::Other) => None,
            Err(e) => {
                self.skipped(&e, "frame skipped");
                None
            }
        }
    }

    /// Counts and logs what could not be read: a frame, or one trade in it.
    fn skipped(&self, e: &dyn std::fmt::Display, what: &'static str) {
        self.feed.stats.parse_error();
        tracing::debug!(exchange = %self.feed.def.def.name, error = %e, "{what}");
    }

    fn deliver(&mut self, mut trade: RawTrade, replayed: bool, received: i64) {
        trade.symbol.make_ascii_lowercase();
        let Some(index) = self.feed.pair_index(&trade.symbol) else {
            return;
        };
        if let Some(id) = &trade.trade_id
            && !self.recent.entry(index).or_default().insert(id)
        {
            self.feed.stats.duplicate();
            return;
        }
        self.feed.stats.trade_seen();
        self.feed.deliver(
            index,
            PriceUpdate {
                price: trade.price,
                time_exchange_ms: trade.time_ms,
                received_ms: received,
                replayed,
            },
        );
    }
}

/// Runs `work` (a connection's session, reading a REST answer), turning a panic inside it
/// into `Err` with what the panic said, so the task that runs it goes on instead of ending for
/// good. What a panic may leave half done is that work's own state and the book's latest
/// update, which the next update rebuilds; the locks do not poison.
pub(crate) async fn caught<T>(work: impl Future<Output = T>) -> Result<T, String> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|panic| panic_text(&*panic))
}

/// What a panic said, when it said it with a string.
fn panic_text(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_caught_with_what_it_said() {
        let said =
            |end: Result<SessionEnd, String>| end.unwrap_or_else(SessionEnd::Panicked).to_string();
        assert_eq!(
            said(caught(async { panic!("bad frame {}", 7) }).await),
            "panicked: bad frame 7"
        );
        assert_eq!(
            said(caught(async { panic!("boom") }).await),
            "panicked: boom"
        );
        assert_eq!(
            said(caught(async { std::panic::panic_any(42_u8) }).await),
            "panicked: (no message)"
        );
        assert!(matches!(
            caught(async { SessionEnd::Closed }).await,
            Ok(SessionEnd::Closed)
        ));
    }

    #[test]
    fn a_trade_id_is_seen_once_and_the_memory_is_bounded() {
        let mut recent = RecentIds::default();
        assert!(recent.insert("1"));
        assert!(!recent.insert("1"));
        for i in 2..=RECENT_IDS + 1 {
            assert!(recent.insert(&i.to_string()));
        }
        assert_eq!(recent.0.len(), RECENT_IDS);
        // "1" was the oldest and has been forgotten; the newest are still known.
        assert!(recent.insert("1"));
        assert!(!recent.insert(&RECENT_IDS.to_string()));
    }
}
