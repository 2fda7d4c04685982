use beast_core::Price;
use serde_json::Value;

use super::*;

const MAX_AGE: i64 = 10_000;

fn tick(source: &str, quote: &str, price: &str, at: i64) -> Tick {
    Tick {
        asset: "BTC".into(),
        source: source.into(),
        quote: quote.into(),
        price: Price::parse(price).unwrap(),
        time_exchange_ms: at,
        time_received_ms: at,
        replayed: false,
    }
}

fn book_with(ticks: Vec<Tick>) -> Book {
    let book = Book::new(MAX_AGE);
    book.set_assets(["BTC", "ETH"]);
    for t in ticks {
        book.apply(t);
    }
    book
}

fn json(book: &Book, source: Option<&str>, now: i64) -> Value {
    serde_json::from_slice(&fresh(book, source, now).template.render(now)).unwrap()
}

#[test]
fn the_served_price_is_the_median_of_fresh_sources() {
    let book = book_with(vec![
        tick("a-ws", "USD", "100.5", 1000),
        tick("b-ws", "USD", "101.0", 1000),
        tick("c-ws", "USD", "99", 1000),
    ]);
    let v = json(&book, None, 1500);
    assert_eq!(v["price"], "100.5");
    assert_eq!(v["sources_used"], 3);
    assert_eq!(v["spread"], "2");
    assert_eq!(v["age_ms"], 500);
    assert_eq!(v["sources"].as_array().unwrap().len(), 3);
}

#[test]
fn an_even_number_of_sources_averages_the_middle_two_exactly() {
    let book = book_with(vec![
        tick("a-ws", "USD", "0.1", 0),
        tick("b-ws", "USD", "0.2", 0),
    ]);
    assert_eq!(json(&book, None, 1)["price"], "0.15");
}

#[test]
fn a_single_source_keeps_the_exchange_text() {
    let book = book_with(vec![tick("a-ws", "USD", "68500.0", 0)]);
    assert_eq!(json(&book, None, 1)["price"], "68500.0");
}

#[test]
fn stale_source_is_left_out_of_the_median() {
    let book = book_with(vec![
        tick("a-ws", "USD", "100", 0),
        tick("b-ws", "USD", "200", 5_000),
    ]);
    let v = json(&book, None, 12_000);
    assert_eq!(v["price"], "200");
    assert_eq!(v["sources_used"], 1);
    let a = v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "a-ws")
        .unwrap()
        .clone();
    assert_eq!(
        (a["fresh"].clone(), a["used"].clone(), a["age_ms"].clone()),
        (false.into(), false.into(), 12_000.into())
    );
}

#[test]
fn an_asset_with_no_fresh_source_is_stale_with_the_age_of_the_newest() {
    let book = book_with(vec![
        tick("a-ws", "USD", "100", 0),
        tick("b-ws", "USD", "200", 2_000),
    ]);
    assert!(matches!(
        book.lookup("BTC", None, 20_000),
        Lookup::Stale { age_ms: 18_000 }
    ));
}

#[test]
fn known_assets_without_a_price_differ_from_unknown_ones() {
    let book = book_with(vec![]);
    assert!(matches!(book.lookup("ETH", None, 0), Lookup::NoPrice));
    assert!(matches!(book.lookup("NOPE", None, 0), Lookup::Unknown));
}

#[test]
fn usd_is_preferred_and_usdt_is_never_relabelled() {
    let book = book_with(vec![
        tick("a-ws", "USDT", "100", 0),
        tick("b-ws", "USDT", "102", 0),
        tick("c-ws", "USD", "101", 0),
    ]);
    let v = json(&book, None, 1);
    assert_eq!(
        (
            v["quote"].clone(),
            v["price"].clone(),
            v["sources_used"].clone()
        ),
        ("USD".into(), "101".into(), 1.into())
    );
    let only_usdt = book_with(vec![
        tick("a-ws", "USDT", "100", 0),
        tick("b-ws", "USDT", "102", 0),
    ]);
    let v = json(&only_usdt, None, 1);
    assert_eq!(
        (v["quote"].clone(), v["price"].clone()),
        ("USDT".into(), "101".into())
    );
}

#[test]
fn a_caller_can_pin_one_source() {
    let book = book_with(vec![
        tick("a-ws", "USD", "100", 0),
        tick("b-ws", "USD", "200", 0),
    ]);
    let v = json(&book, Some("b-ws"), 1);
    assert_eq!(
        (v["price"].clone(), v["sources"].as_array().unwrap().len()),
        ("200".into(), 1)
    );
    assert!(matches!(
        book.lookup("BTC", Some("z-ws"), 1),
        Lookup::NoPrice
    ));
}

#[test]
fn a_stale_pinned_source_tells_its_own_age_not_the_newest_of_others() {
    let book = book_with(vec![
        tick("a-ws", "USD", "100", 0),
        tick("b-ws", "USD", "200", 20_000),
    ]);
    let now = MAX_AGE + 5_000;
    assert!(matches!(
        book.lookup("BTC", Some("a-ws"), now),
        Lookup::Stale { age_ms } if age_ms == now
    ));
    assert!(matches!(
        book.lookup("BTC", Some("b-ws"), now),
        Lookup::Fresh(_)
    ));
    assert!(matches!(
        book.lookup("BTC", None, MAX_AGE + 30_000),
        Lookup::Stale { age_ms } if age_ms == MAX_AGE + 10_000
    ));
}

#[test]
fn replayed_snapshot_trades_never_count_as_fresh() {
    let mut t = tick("a-ws", "USD", "100", 1_000);
    t.replayed = true;
    t.time_received_ms = 1_500;
    let book = book_with(vec![t]);
    assert!(matches!(
        book.lookup("BTC", None, 1_600),
        Lookup::Stale { age_ms: 600 }
    ));
    book.apply(tick("a-ws", "USD", "101", 1_700));
    assert_eq!(json(&book, None, 1_800)["price"], "101");
}

#[test]
fn an_older_trade_does_not_overwrite_a_newer_one() {
    let book = book_with(vec![tick("a-ws", "USD", "101", 2_000)]);
    book.apply(tick("a-ws", "USD", "100", 1_000));
    assert_eq!(json(&book, None, 2_100)["price"], "101");
}

#[test]
fn the_answer_is_rendered_once_per_change_not_per_read() {
    let book = book_with(vec![tick("a-ws", "USD", "100", 0)]);
    let first = match book.lookup("BTC", None, 1) {
        Lookup::Fresh(a) => a,
        other => panic!("{other:?}"),
    };
    let second = match book.lookup("BTC", None, 2) {
        Lookup::Fresh(a) => a,
        other => panic!("{other:?}"),
    };
    assert!(Arc::ptr_eq(&first, &second), "same rendered answer reused");
    assert_eq!(&*first.sources_used, "a-ws");
}

fn fresh(book: &Book, source: Option<&str>, now: i64) -> Arc<Answer> {
    match book.lookup("BTC", source, now) {
        Lookup::Fresh(a) => a,
        other => panic!("expected a fresh answer, got {other:?}"),
    }
}

#[test]
fn a_trade_re_renders_its_own_source_and_keeps_the_others() {
    let book = book_with(vec![
        tick("a-ws", "USD", "100", 0),
        tick("b-ws", "USD", "200", 0),
    ]);
    let (a, b) = (fresh(&book, Some("a-ws"), 1), fresh(&book, Some("b-ws"), 1));
    book.apply(tick("b-ws", "USD", "201", 5));
    assert!(
        Arc::ptr_eq(&a, &fresh(&book, Some("a-ws"), 6)),
        "a-ws unchanged: kept"
    );
    let b_after = fresh(&book, Some("b-ws"), 6);
    assert!(!Arc::ptr_eq(&b, &b_after));
    assert_eq!(json(&book, Some("b-ws"), 6)["price"], "201");
    // Once a-ws has aged out, the next trade of b-ws drops it rather than keeping it.
    book.apply(tick("b-ws", "USD", "202", MAX_AGE + 1));
    assert!(matches!(
        book.lookup("BTC", Some("a-ws"), MAX_AGE + 1),
        Lookup::Stale { .. }
    ));
}

#[test]
fn prices_of_assets_the_book_does_not_know_are_dropped() {
    let book = book_with(vec![]);
    let mut t = tick("a-ws", "USD", "1", 0);
    t.asset = "NOPE".into();
    book.apply(t);
    assert!(matches!(book.lookup("NOPE", None, 1), Lookup::Unknown));
    // Forgetting an asset makes it unknown; keeping one keeps its price.
    book.apply(tick("a-ws", "USD", "100", 0));
    book.set_assets(["BTC"]);
    assert!(matches!(book.lookup("ETH", None, 1), Lookup::Unknown));
    assert_eq!(json(&book, None, 1)["price"], "100");
}
