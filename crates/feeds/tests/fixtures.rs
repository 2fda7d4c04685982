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
        let text = std::fs::read_to_string(format!(
            "{}/tests/fixtures/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let fixture: Value = serde_json::from_str(&text).unwrap();
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
                "error" => assert!(got.is_err(), "{about}: expected an error, got {got:?}"),
                kind => panic!("{about}: unknown kind {kind}"),
            }
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} cases");
}
