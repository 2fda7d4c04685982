//! Simulated markets: one random-walk price and one trade-id counter per (exchange, pair),
//! shared by every connection and by the REST tickers so they all tell the same story.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use rand::Rng;
use rand::rngs::ThreadRng;
use time::OffsetDateTime;

/// Trades replayed in a snapshot.
pub(crate) const SNAPSHOT_TRADES: usize = 5;

/// Longest symbol a client may subscribe.
const MAX_SYMBOL_LEN: usize = 64;

/// Taker side of a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Buy,
    Sell,
}

impl Side {
    /// `BUY` / `SELL`.
    pub(crate) fn upper(self) -> &'static str {
        match self {
            Side::Buy => "BUY",
            Side::Sell => "SELL",
        }
    }

    /// `buy` / `sell`.
    pub(crate) fn lower(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
}

/// One trade, with price and size already written as decimal text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Trade {
    /// The symbol exactly as the client spelled it.
    pub symbol: String,
    /// Increases per (exchange, pair).
    pub id: u64,
    pub price: String,
    pub size: String,
    pub side: Side,
    pub time: OffsetDateTime,
}

/// What a REST ticker reports: the last trade plus book and 24 h figures, all decimal text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ticker {
    pub last: Trade,
    pub bid: String,
    pub ask: String,
    pub open: String,
    pub high: String,
    pub low: String,
    /// 24 h volume in base units.
    pub volume: String,
    /// 24 h volume in quote units.
    pub quote_volume: String,
    /// 24 h change as a fraction (`0.0012`).
    pub change_ratio: String,
    /// 24 h change in percent (`0.12`).
    pub change_percent: String,
}

/// A symbol split into asset and quote, however the exchange writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pair {
    pub asset: String,
    pub quote: String,
}

impl Pair {
    /// `BTC-USD`, `btcusd`, `BTC/USD`, `XBTUSD`, `BTC_USDT`, `BTCUSD-PERP` → BTC and USD(T).
    pub(crate) fn parse(symbol: &str) -> Pair {
        const QUOTES: [&str; 2] = ["USDT", "USD"];
        let upper = symbol.to_ascii_uppercase();
        let mut parts = upper.split(['-', '_', '/']).filter(|part| !part.is_empty());
        let first = parts.next().unwrap_or_default();
        let second = parts.next();
        let stripped = QUOTES.iter().find_map(|quote| {
            let asset = first.strip_suffix(quote)?;
            (!asset.is_empty()).then_some((asset, *quote))
        });
        let (asset, quote) = match (second, stripped) {
            (Some(quote), _) if QUOTES.contains(&quote) => (first, quote),
            // `BTCUSD-PERP`: the quote is glued to the asset, the rest names the contract.
            (_, Some(split)) => split,
            (Some(quote), None) => (first, quote),
            (None, None) => (first, "USD"),
        };
        let asset = if asset == "XBT" { "BTC" } else { asset };
        Pair {
            asset: asset.to_owned(),
            quote: quote.to_owned(),
        }
    }
}

/// Whether a client-sent symbol looks like something an exchange would list.
pub(crate) fn is_plausible_symbol(symbol: &str) -> bool {
    !symbol.is_empty()
        && symbol.len() <= MAX_SYMBOL_LEN
        && symbol
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_/.:".contains(c))
}

/// Every simulated book, keyed by exchange and normalised pair.
#[derive(Debug, Default)]
pub(crate) struct Market {
    /// One lock for all books: it is held only to step a walk or copy a trade, never across
    /// an `.await`, and a few dozen connections at 10 batches/s never contend for long.
    books: Mutex<HashMap<(&'static str, String), Book>>,
}

impl Market {
    /// The next live trade on `symbol`: steps the walk and takes a new id.
    pub(crate) fn trade(&self, exchange: &'static str, symbol: &str) -> Trade {
        self.with_book(exchange, symbol, |book, rng| book.record(symbol, rng))
    }

    /// Recent trades on `symbol`, in that spelling, newest first, as a real exchange replays
    /// them on subscribe: the last [`SNAPSHOT_TRADES`] live trades (already sent to earlier
    /// connections or reported by a ticker, same ids), or for a book that never traded, older
    /// trades seconds to minutes in the past. Their ids are taken from the same counter, so
    /// they sort below every later live trade.
    pub(crate) fn snapshot(&self, exchange: &'static str, symbol: &str) -> Vec<Trade> {
        self.with_book(exchange, symbol, |book, rng| {
            if !book.recent.is_empty() {
                // Each was recorded in the spelling of whoever made it.
                return book
                    .recent
                    .iter()
                    .rev()
                    .map(|trade| Trade {
                        symbol: symbol.to_owned(),
                        ..trade.clone()
                    })
                    .collect();
            }
            let now = OffsetDateTime::now_utc();
            let mut age = rng.random_range(2.0..10.0);
            let mut ages = Vec::with_capacity(SNAPSHOT_TRADES);
            for _ in 0..SNAPSHOT_TRADES {
                ages.push(age);
                age += rng.random_range(5.0..40.0);
            }
            let mut trades: Vec<Trade> = ages
                .iter()
                .rev()
                .map(|&age| {
                    let price = book.price * (1.0 + rng.random_range(-0.001..0.001));
                    book.trade(symbol, price, now - time::Duration::seconds_f64(age), rng)
                })
                .collect();
            trades.reverse();
            trades
        })
    }

    /// The REST view of `symbol`: its last trade (made now, as a live trade, if it never
    /// traded) and figures derived from the same price.
    pub(crate) fn ticker(&self, exchange: &'static str, symbol: &str) -> Ticker {
        self.with_book(exchange, symbol, |book, rng| {
            let mut last = book
                .recent
                .back()
                .cloned()
                .unwrap_or_else(|| book.record(symbol, rng));
            last.symbol = symbol.to_owned();
            book.ticker(last)
        })
    }

    fn with_book<R>(
        &self,
        exchange: &'static str,
        symbol: &str,
        f: impl FnOnce(&mut Book, &mut ThreadRng) -> R,
    ) -> R {
        let pair = Pair::parse(symbol);
        let mut rng = rand::rng();
        let mut books = self.books.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (exchange, format!("{}/{}", pair.asset, pair.quote));
        let book = books
            .entry(key)
            .or_insert_with(|| Book::new(exchange, &pair, &mut rng));
        f(book, &mut rng)
    }
}

/// One (exchange, pair): a mean-reverting random walk around `anchor`.
#[derive(Debug)]
struct Book {
    anchor: f64,
    price: f64,
    decimals: usize,
    next_id: u64,
    /// The last live trades, oldest first, at most [`SNAPSHOT_TRADES`]; the newest is the
    /// ticker's last trade.
    recent: VecDeque<Trade>,
}

impl Book {
    fn new(exchange: &str, pair: &Pair, rng: &mut ThreadRng) -> Book {
        let anchor = base_price(&pair.asset) * (1.0 + exchange_offset(exchange));
        Book {
            anchor,
            price: anchor * (1.0 + rng.random_range(-0.001..0.001)),
            decimals: price_decimals(anchor),
            next_id: rng.random_range(100_000_000..900_000_000),
            recent: VecDeque::new(),
        }
    }

    fn step(&mut self, rng: &mut ThreadRng) {
        let shock = rng.random_range(-0.0005..0.0005);
        let pull = (self.anchor - self.price) * 0.02;
        self.price =
            (self.price * (1.0 + shock) + pull).clamp(self.anchor * 0.8, self.anchor * 1.25);
    }

    /// A live trade now: steps the walk, takes a new id and keeps the trade for snapshots.
    fn record(&mut self, symbol: &str, rng: &mut ThreadRng) -> Trade {
        self.step(rng);
        let trade = self.trade(symbol, self.price, OffsetDateTime::now_utc(), rng);
        if self.recent.len() == SNAPSHOT_TRADES {
            self.recent.pop_front();
        }
        self.recent.push_back(trade.clone());
        trade
    }

    fn trade(
        &mut self,
        symbol: &str,
        price: f64,
        time: OffsetDateTime,
        rng: &mut ThreadRng,
    ) -> Trade {
        let id = self.next_id;
        self.next_id += 1;
        let notional = rng.random_range(20.0..3_000.0);
        Trade {
            symbol: symbol.to_owned(),
            id,
            price: decimal(price, self.decimals),
            size: decimal(notional / price, 8),
            side: if rng.random_bool(0.5) {
                Side::Buy
            } else {
                Side::Sell
            },
            time,
        }
    }

    fn ticker(&self, last: Trade) -> Ticker {
        let price = self.price;
        let spread = self.anchor * 0.0001;
        let open = self.anchor;
        let volume = 2_500_000.0 / self.anchor;
        let change = (price - open) / open;
        Ticker {
            last,
            bid: decimal(price - spread, self.decimals),
            ask: decimal(price + spread, self.decimals),
            open: decimal(open, self.decimals),
            high: decimal(price.max(open) * 1.004, self.decimals),
            low: decimal(price.min(open) * 0.996, self.decimals),
            volume: decimal(volume, 4),
            quote_volume: decimal(volume * price, 2),
            change_ratio: decimal_signed(change, 4),
            change_percent: decimal_signed(change * 100.0, 2),
        }
    }
}

/// Realistic level for the majors; a stable hash-based level in 0.01..100 for anything else.
fn base_price(asset: &str) -> f64 {
    match asset {
        "BTC" => 64_000.0,
        "ETH" => 3_200.0,
        "SOL" => 150.0,
        "XRP" => 0.6,
        "DOGE" => 0.15,
        "LTC" => 80.0,
        "LINK" => 15.0,
        "AVAX" => 35.0,
        "USDC" | "USDT" | "DAI" => 1.0,
        other => 10f64.powf(-2.0 + 4.0 * unit(fnv1a(other))),
    }
}

/// Each exchange quotes a little apart from the others, within ±0.3 %.
fn exchange_offset(exchange: &str) -> f64 {
    (unit(fnv1a(exchange)) - 0.5) * 0.006
}

/// About six significant digits, between 2 and 8 decimals.
fn price_decimals(anchor: f64) -> usize {
    let magnitude = anchor.log10().floor() as i32;
    (5 - magnitude).clamp(2, 8) as usize
}

/// Positive decimal text; never exponent notation, never zero.
fn decimal(value: f64, decimals: usize) -> String {
    let smallest = 10f64.powi(-(decimals as i32));
    format!("{:.*}", decimals, value.max(smallest))
}

/// Decimal text that may be negative (changes).
fn decimal_signed(value: f64, decimals: usize) -> String {
    format!("{value:.decimals$}")
}

/// FNV-1a: stable across runs and Rust releases, unlike `DefaultHasher`.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A hash mapped onto [0, 1).
fn unit(hash: u64) -> f64 {
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EXCHANGES;

    fn price(trade: &Trade) -> f64 {
        trade.price.parse().expect("decimal price")
    }

    #[test]
    fn every_exchange_spelling_names_the_same_pair() {
        for symbol in ["BTC-USD", "btcusd", "BTC/USD", "XBTUSD", "BTCUSD-PERP"] {
            let pair = Pair::parse(symbol);
            assert_eq!(
                (pair.asset.as_str(), pair.quote.as_str()),
                ("BTC", "USD"),
                "{symbol}"
            );
        }
        for symbol in ["BTC_USDT", "BTC-USDT", "btcusdt", "BTC-USDT-SWAP"] {
            let pair = Pair::parse(symbol);
            assert_eq!(
                (pair.asset.as_str(), pair.quote.as_str()),
                ("BTC", "USDT"),
                "{symbol}"
            );
        }
        assert_eq!(Pair::parse("GUSD_USDT").asset, "GUSD");
        assert_eq!(Pair::parse("paxgusd").asset, "PAXG");
    }

    #[test]
    fn majors_start_near_their_real_level_on_every_exchange() {
        let market = Market::default();
        for exchange in EXCHANGES {
            for (symbol, base) in [
                ("BTC-USD", 64_000.0),
                ("eth_usdt", 3_200.0),
                ("XRP/USD", 0.6),
            ] {
                let level = price(&market.trade(exchange, symbol));
                assert!(
                    (level / base - 1.0).abs() < 0.005,
                    "{exchange} {symbol} {level}"
                );
            }
        }
    }

    #[test]
    fn exchanges_quote_slightly_apart() {
        let offsets: Vec<f64> = EXCHANGES.iter().map(|e| exchange_offset(e)).collect();
        assert!(
            offsets.iter().all(|offset| offset.abs() < 0.005),
            "{offsets:?}"
        );
        let distinct = offsets.iter().filter(|&&o| o != offsets[0]).count();
        assert!(distinct >= 4, "{offsets:?}");
    }

    #[test]
    fn unknown_assets_get_a_stable_base_between_one_cent_and_a_hundred() {
        for asset in ["PEPE", "BONK", "TIA", "CHILLGUY", "1INCH", "S"] {
            let base = base_price(asset);
            assert!((0.01..=100.0).contains(&base), "{asset} {base}");
        }
        // Pinned, so a change of hash or of its mapping onto prices shows: the FNV-1a-64 test
        // vector, and PEPE's level as the code has always computed it.
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("PEPE"), 0xf4bd_7719_3b2a_d59d);
        let pepe = base_price("PEPE");
        assert!((pepe / 66.690_510_191_052_8 - 1.0).abs() < 1e-12, "{pepe}");
    }

    #[test]
    fn prices_are_plain_positive_decimals() {
        let market = Market::default();
        for symbol in ["BTC-USD", "DOGE-USD", "PEPE-USD", "SHIB_USDT", "BONK-USD"] {
            for _ in 0..200 {
                let trade = market.trade("okx", symbol);
                for text in [&trade.price, &trade.size] {
                    assert!(!text.contains(['e', 'E', '-']), "{symbol} {text}");
                    assert!(
                        text.parse::<f64>().expect("decimal") > 0.0,
                        "{symbol} {text}"
                    );
                }
            }
        }
        assert_eq!(decimal(1e-12, 8), "0.00000001");
    }

    #[test]
    fn trade_ids_increase_per_pair_and_snapshots_come_first_newest_first() {
        let market = Market::default();
        let snapshot = market.snapshot("kraken", "SOL/USD");
        assert_eq!(snapshot.len(), SNAPSHOT_TRADES);
        let now = OffsetDateTime::now_utc();
        for pair in snapshot.windows(2) {
            assert!(pair[0].time > pair[1].time && pair[0].id > pair[1].id);
        }
        assert!(
            snapshot
                .iter()
                .all(|t| now - t.time >= time::Duration::seconds(2))
        );
        let first = market.trade("kraken", "SOL/USD");
        let second = market.trade("kraken", "SOL/USD");
        assert!(first.id > snapshot[0].id && second.id == first.id + 1);
    }

    #[test]
    fn a_ticker_on_a_book_that_never_traded_makes_a_live_trade_later_snapshots_replay() {
        let market = Market::default();
        let early = market.snapshot("kraken", "ETH/USD");
        let ticker = market.ticker("kraken", "ETHUSD");
        assert!(
            early
                .iter()
                .all(|t| t.id < ticker.last.id && t.time < ticker.last.time),
            "the ticker trade comes after the snapshot made up before it"
        );

        let replayed = market.snapshot("kraken", "ETH/USD");
        assert_eq!(replayed.len(), 1);
        assert_eq!(
            (
                replayed[0].id,
                replayed[0].time,
                replayed[0].symbol.as_str()
            ),
            (ticker.last.id, ticker.last.time, "ETH/USD"),
            "replayed in the subscriber's spelling"
        );
        assert_eq!(replayed[0].price, ticker.last.price);

        let live = market.trade("kraken", "ETH/USD");
        assert_eq!(live.id, ticker.last.id + 1);
        assert_eq!(market.ticker("kraken", "ETH/USD").last.id, live.id);
        let snapshot = market.snapshot("kraken", "ETH/USD");
        let ids: Vec<u64> = snapshot.iter().map(|t| t.id).collect();
        assert_eq!(ids, [live.id, ticker.last.id], "newest first");
        assert!(snapshot[0].time >= snapshot[1].time);
    }

    #[test]
    fn snapshots_keep_only_the_last_live_trades() {
        let market = Market::default();
        let trades: Vec<Trade> = (0..SNAPSHOT_TRADES + 3)
            .map(|_| market.trade("okx", "SOL-USDT"))
            .collect();
        let snapshot: Vec<u64> = market
            .snapshot("okx", "SOL-USDT")
            .iter()
            .map(|t| t.id)
            .collect();
        let expected: Vec<u64> = trades
            .iter()
            .rev()
            .take(SNAPSHOT_TRADES)
            .map(|t| t.id)
            .collect();
        assert_eq!(snapshot, expected);
    }

    #[test]
    fn the_ticker_reports_the_last_trade_in_the_requested_spelling() {
        let market = Market::default();
        let trade = market.trade("kraken", "BTC/USD");
        let ticker = market.ticker("kraken", "XBTUSD");
        assert_eq!(ticker.last.price, trade.price);
        assert_eq!(ticker.last.id, trade.id);
        assert_eq!(ticker.last.symbol, "XBTUSD");
        let (bid, ask): (f64, f64) = (
            ticker.bid.parse().expect("bid"),
            ticker.ask.parse().expect("ask"),
        );
        assert!(bid < price(&trade) && price(&trade) < ask);
    }

    #[test]
    fn only_plausible_symbols_are_accepted() {
        for symbol in [
            "BTC-USD",
            "btcusd",
            "BTC/USD",
            "BTC_USDT",
            "BTCUSD-PERP",
            "1INCH-USD",
        ] {
            assert!(is_plausible_symbol(symbol), "{symbol}");
        }
        for symbol in ["", "BTC USD", "BTC\"USD", &"X".repeat(65)] {
            assert!(!is_plausible_symbol(symbol), "{symbol}");
        }
    }
}
