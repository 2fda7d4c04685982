//! Connector parsing on real recorded frames: every fixture in `tests/fixtures/<exchange>.json`
//! (each cites where its frames come from) is run through that exchange's seeded definition.
#![allow(clippy::unwrap_used)]

use beast_core::ExchangeDefinition;
use beast_feeds::{CompiledDefinition, Frame};
use serde_json::Value;

fn seeded(name: &str) -> CompiledDefinition {
    let all: Vec<ExchangeDefinition> =
        serde_json::from_str(include_str!("../../store/seed/exchanges.json")).unwrap();
    let def = all.into_iter().find(|d| d.name == name).unwrap();
    CompiledDefinition::compile(def).unwrap()
}

/// The recorded frames of one exchange: `tests/fixtures/<name>.json`.
fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn trade_rows(frame: &Frame) -> Vec<Value> {
    match frame {
        Frame::Trades { trades, .. } => trades
            .iter()
            .map(|t| {
                serde_json::json!([
                    t.symbol,
                    t.price.text(),
                    t.size.as_ref().map(|s| s.text().to_owned()),
                    t.time_ms,
                    t.trade_id
                ])
            })
            .collect(),
        _ => vec![],
    }
}

#[test]
fn recorded_frames_of_every_exchange_parse_to_the_expected_trades() {
    let mut checked = 0;
    for name in ["coinbase", "gemini", "kraken", "gateio", "cryptocom", "okx"] {
        let fixture = fixture(name);
        assert!(
            !fixture["sources"].as_array().unwrap().is_empty(),
            "{name}: cite the frames"
        );
        let def = seeded(name);
        for case in fixture["cases"].as_array().unwrap() {
            let about = format!("{name}: {}", case["about"]);
            let got = def.read_frame(case["frame"].as_str().unwrap());
            match case["kind"].as_str().unwrap() {
                "trades" => {
                    let frame = got.unwrap_or_else(|e| panic!("{about}: {e}"));
                    assert_eq!(
                        trade_rows(&frame),
                        case["trades"].as_array().unwrap().clone(),
                        "{about}"
                    );
                    let replayed = matches!(frame, Frame::Trades { replayed: true, .. });
                    assert_eq!(replayed, case["replayed"].as_bool().unwrap(), "{about}");
                }
                "heartbeat" => assert_eq!(
                    got.unwrap(),
                    Frame::Heartbeat(case["reply"].as_str().unwrap().to_owned()),
                    "{about}"
                ),
                "other" => assert_eq!(got.unwrap(), Frame::Other, "{about}"),
                "text" => assert_eq!(got.unwrap(), Frame::Text, "{about}"),
                // A frame that is not JSON.
                "malformed" => assert!(got.is_err(), "{about}: expected an error, got {got:?}"),
                // Trades, every one refused, each with its reason.
                "refused" => assert!(
                    matches!(&got, Ok(Frame::Trades { trades, refused, .. })
                        if trades.is_empty() && !refused.is_empty()),
                    "{about}: expected only refused trades, got {got:?}"
                ),
                kind => panic!("{about}: unknown kind {kind}"),
            }
            checked += 1;
        }
    }
    // Every case, so none can go missing unnoticed (`exchanges parse` checks the same 27).
    assert_eq!(checked, 27);
}

/// Values that have broken parsers: huge, tiny, negative, non-finite, odd times and types.
const ODD_VALUES: &[&str] = &[
    "1e999",
    "-1",
    "0",
    "-0",
    "18446744073709551616",
    "99999999999999999999999999999999",
    "0.00000000000000000000000000000001",
    "1.7976931348623157e309",
    "\"NaN\"",
    "\"inf\"",
    "\"-5\"",
    "\"1e30\"",
    "\"\"",
    "\"9999-99-99T99:99:99Z\"",
    "\"2025-02-30T25:61:61.9999999999Z\"",
    "\"0000-01-01T00:00:00Z\"",
    "\"2025-12-31T06:00:12.44524+99:99\"",
    "null",
    "true",
    "[]",
    "{}",
    "[[[[[[[[]]]]]]]]",
    "\"\u{1f4b8}\"",
    "\"\\u0000\"",
];

/// Paths (JSON pointers) of every scalar in `v`.
fn scalar_paths(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                scalar_paths(
                    child,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                scalar_paths(child, format!("{at}/{i}"), out);
            }
        }
        _ => out.push(at),
    }
}

/// A frame with random edits. Half keep it JSON: one or two of its scalars swapped for odd
/// values, so the field readers see them. Half are text edits (a JSON fragment put in, a piece
/// cut or repeated), on characters, so it stays text.
fn mutant(rng: &mut rand::rngs::StdRng, frame: &str) -> String {
    use rand::Rng;
    const FRAGMENTS: &[&str] = &["\"", "\\", "{", "}", "[", "]", ",", ":", " ", "\u{e9}"];
    if rng.random_bool(0.5)
        && let Ok(mut value) = serde_json::from_str::<Value>(frame)
    {
        let mut paths = Vec::new();
        scalar_paths(&value, String::new(), &mut paths);
        for _ in 0..rng.random_range(1..=2) {
            if paths.is_empty() {
                break;
            }
            let path = &paths[rng.random_range(0..paths.len())];
            let odd = ODD_VALUES[rng.random_range(0..ODD_VALUES.len())];
            if let Some(slot) = value.pointer_mut(path) {
                *slot = serde_json::from_str(odd).unwrap();
            }
        }
        return value.to_string();
    }
    let mut chars: Vec<char> = frame.chars().collect();
    for _ in 0..rng.random_range(1..=3) {
        let at = rng.random_range(0..=chars.len());
        let end = (at + rng.random_range(1..12)).min(chars.len());
        match rng.random_range(0..3) {
            0 => {
                let fragment = FRAGMENTS[rng.random_range(0..FRAGMENTS.len())];
                chars.splice(at..at, fragment.chars());
            }
            1 => {
                chars.drain(at..end);
            }
            _ => {
                let piece: Vec<char> = chars[at..end].to_vec();
                chars.splice(at..at, piece);
            }
        }
    }
    chars.into_iter().collect()
}

#[test]
fn mutated_frames_never_panic_a_reader_and_any_trade_read_has_a_positive_price() {
    use rand::SeedableRng;
    let names = ["coinbase", "gemini", "kraken", "gateio", "cryptocom", "okx"];
    let defs: Vec<CompiledDefinition> = names.iter().map(|n| seeded(n)).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_f00d);
    let (mut trades, mut refused) = (0, 0);
    for name in names {
        let fixture = fixture(name);
        for case in fixture["cases"].as_array().unwrap() {
            let frame = case["frame"].as_str().unwrap();
            for _ in 0..300 {
                let mutant = mutant(&mut rng, frame);
                // Every exchange's reader, not just the frame's own: a feed may send anything.
                for def in &defs {
                    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        def.read_frame(&mutant)
                    }))
                    .unwrap_or_else(|_| panic!("reading panicked on {mutant:?}"));
                    match got {
                        Ok(Frame::Trades {
                            trades: t,
                            refused: r,
                            ..
                        }) => {
                            refused += r.len();
                            for trade in &t {
                                assert!(
                                    trade.price.value().is_sign_positive()
                                        && !trade.price.value().is_zero(),
                                    "{mutant:?}: {trade:?}"
                                );
                            }
                            trades += t.len();
                        }
                        Ok(_) => {}
                        Err(_) => refused += 1,
                    }
                }
            }
        }
    }
    // The mix reaches every outcome: trades still read, and frames refused.
    assert!(
        trades > 500 && refused > 10_000,
        "{trades} trades, {refused} refused"
    );
}

#[test]
fn a_bad_trade_costs_only_itself_not_the_rest_of_its_frame() {
    let kraken = seeded("kraken");
    let good = serde_json::json!({"symbol": "BTC/USD", "side": "buy", "price": 68500.0,
        "qty": 0.01, "ord_type": "limit", "trade_id": 1, "timestamp": "2024-05-27T12:43:11.798009Z"});
    let mut bad = good.clone();
    bad["price"] = serde_json::json!("-5");
    bad["trade_id"] = serde_json::json!(2);
    let frame = |data: Vec<&Value>| {
        serde_json::json!({"channel": "trade", "type": "update", "data": data}).to_string()
    };
    match kraken.read_frame(&frame(vec![&bad, &good])).unwrap() {
        Frame::Trades {
            trades, refused, ..
        } => {
            assert_eq!(trades.len(), 1);
            assert_eq!(trades[0].trade_id.as_deref(), Some("1"));
            assert_eq!(refused.len(), 1);
            assert!(
                refused[0].to_string().contains("price_path"),
                "{}",
                refused[0]
            );
        }
        other => panic!("{other:?}"),
    }
    // Nothing but bad ones: no trade, and each refusal reported.
    match kraken.read_frame(&frame(vec![&bad, &bad])).unwrap() {
        Frame::Trades {
            trades, refused, ..
        } => assert_eq!((trades.len(), refused.len()), (0, 2)),
        other => panic!("{other:?}"),
    }
}
