//! What the one-pass UDP request scan saves over serde_json: nanoseconds per datagram for
//! each reader over the same requests, alternating, medians of 7 rounds, and their ratio. Each
//! request is made owned after it is read, as the listener does before answering it.
//!
//! `cargo bench -p beast-api --bench udp_request`

use std::{hint::black_box, time::Instant};

use beast_api::udp::request::{Request, parse, parse_general};

const ROUNDS: usize = 7;
const PER_ROUND: usize = 200_000;

type Reader = for<'a> fn(&'a [u8]) -> Option<Request<'a>>;

fn main() {
    let key = format!("tb_{}", "5e".repeat(32));
    let requests = [
        format!(r#"{{"key":"{key}","asset":"BTC","id":"3-1-10422"}}"#),
        format!(r#"{{"key":"{key}","asset":"ETH"}}"#),
        format!(r#"{{"key":"{key}","asset":"BTC","source":"kraken","id":"7"}}"#),
        format!(r#"{{ "key": "{key}", "assets": ["BTC", "ETH", "SOL"], "id": "b-2" }}"#),
    ];
    let round = |read: Reader| {
        let started = Instant::now();
        for _ in 0..PER_ROUND {
            for request in &requests {
                if let Some(request) = read(black_box(request.as_bytes())) {
                    black_box(request.into_owned());
                }
            }
        }
        started.elapsed().as_nanos() as f64 / (PER_ROUND * requests.len()) as f64
    };
    let (mut scanned, mut general) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        scanned.push(round(parse));
        general.push(round(parse_general));
    }
    let (scanned, general) = (median(scanned), median(general));
    println!("udp request, ns per datagram, median of {ROUNDS} rounds of {PER_ROUND} x 4:");
    println!("  {:<28}{scanned:8.1}", "scan first (parse)");
    println!("  {:<28}{general:8.1}", "serde_json (parse_general)");
    println!("  {:<28}{:8.2}x", "serde_json / scan", general / scanned);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
