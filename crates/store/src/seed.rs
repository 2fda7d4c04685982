//! What a fresh store starts with: the six exchange definitions, the seeds' prewarm assets
//! (25 per exchange) plus the major assets on every exchange, the tiers, and the runtime
//! parameters. The data lives in `seed/*.json`.

use std::collections::BTreeMap;

use beast_core::{AssetMapping, ExchangeDefinition, Tier};
use serde::Deserialize;

use crate::{Result, StoreError};

#[derive(Deserialize)]
struct AssetSeed {
    majors: Vec<String>,
    exchanges: BTreeMap<String, ExchangeAssets>,
}

#[derive(Deserialize)]
struct ExchangeAssets {
    quote: String,
    symbol: String,
    prewarm: Vec<String>,
}

fn bad_seed(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Invalid(format!("built-in seed {what} is invalid: {e}"))
}

/// The six built-in exchange definitions.
pub fn seeded_exchanges() -> Result<Vec<ExchangeDefinition>> {
    serde_json::from_str(include_str!("../seed/exchanges.json"))
        .map_err(|e| bad_seed("exchanges.json", e))
}

pub(crate) fn seeded_tiers() -> Result<Vec<Tier>> {
    serde_json::from_str(include_str!("../seed/tiers.json")).map_err(|e| bad_seed("tiers.json", e))
}

/// Every seeded asset mapping: the prewarm lists, then the majors where not yet mapped.
pub(crate) fn seeded_asset_map() -> Result<Vec<AssetMapping>> {
    let seed: AssetSeed = serde_json::from_str(include_str!("../seed/assets.json"))
        .map_err(|e| bad_seed("assets.json", e))?;
    let mut rows = Vec::new();
    for (exchange, ex) in &seed.exchanges {
        let mut assets: Vec<(&String, &str)> = ex.prewarm.iter().map(|a| (a, "prewarm")).collect();
        for major in &seed.majors {
            match assets.iter_mut().find(|(a, _)| *a == major) {
                Some(entry) => entry.1 = "major",
                None => assets.push((major, "major")),
            }
        }
        for (asset, category) in assets {
            rows.push(AssetMapping {
                exchange: exchange.clone(),
                asset: asset.clone(),
                symbol: ex
                    .symbol
                    .replace("{ASSET}", asset)
                    .replace("{asset}", &asset.to_lowercase()),
                quote: ex.quote.clone(),
                enabled: true,
                prewarm: true,
                category: category.to_owned(),
            });
        }
    }
    Ok(rows)
}

/// Runtime parameters (`application_parameters`): name, default, what it does.
pub fn parameter_defaults() -> &'static [(&'static str, &'static str, &'static str)] {
    &[
        (
            "price_fresh_max_age_ms",
            "30000",
            "A source counts as fresh for this long after its last trade arrived",
        ),
        (
            "usage_batch_size",
            "10000",
            "Most usage events written in one transaction",
        ),
        (
            "usage_flush_ms",
            "100",
            "Longest time a usage event waits before its batch is written",
        ),
        (
            "usage_channel_capacity",
            "200000",
            "Usage events buffered between requests and the batch writer (at least 100)",
        ),
        (
            "keys_reload_ms",
            "500",
            "How often the node checks the store for new or revoked API keys",
        ),
        (
            "exchanges_reload_ms",
            "1000",
            "How often the node checks the store for exchange or mapping changes made elsewhere",
        ),
        (
            "pair_quiet_ms",
            "20000",
            "A pair with no trade for this long on a live connection is refreshed from REST",
        ),
        (
            "rest_fallback_ms",
            "5000",
            "While a feed connection is down, its pairs are refreshed from REST this often",
        ),
        (
            "rest_timeout_ms",
            "5000",
            "Longest wait for an exchange REST ticker answer",
        ),
        (
            "http_header_timeout_ms",
            "30000",
            "A connection must send a whole request header within this long of opening or of its last answer, or it is closed (so idle keep-alive connections close after it too)",
        ),
        (
            "http_write_timeout_ms",
            "60000",
            "A connection whose answer cannot be written for this long (the client stopped reading) is closed",
        ),
        (
            "unauthenticated_per_ip_per_minute",
            "600",
            "Requests without a valid key (public endpoints asked without one, a missing or unknown key) per client address (IPv6: per /64) and minute; 0 for no limit",
        ),
        (
            "http_max_header_bytes",
            "16384",
            "A request whose line and headers are longer is answered 431 and its connection closed (at least 8192)",
        ),
        (
            "rest_concurrency",
            "4",
            "REST ticker calls in flight per exchange (refresh and fallback)",
        ),
        (
            "udp_recv_buffer_bytes",
            "4194304",
            "Receive buffer asked for each UDP socket (the kernel caps it at net.core.rmem_max)",
        ),
        (
            "udp_send_buffer_bytes",
            "4194304",
            "Send buffer asked for each UDP socket (capped at net.core.wmem_max)",
        ),
        (
            "udp_max_answer_bytes",
            "65507",
            "Longest UDP price answer (at most 65507, one IPv4 datagram; 1472 keeps answers unfragmented on a 1500-byte path); a longer one is refused with too_large_for_udp",
        ),
        (
            "on_demand_retry_ms",
            "2000",
            "After an on-demand REST fetch of an asset failed, wait this long before trying again",
        ),
        (
            "governor_max_in_flight",
            "6000",
            "Most price requests (HTTP and UDP) a node answers at once; more are refused with 503 overloaded",
        ),
        (
            "report_page_size_max",
            "10000",
            "Largest page_size of a usage report page (page_size=all streams every row instead)",
        ),
        (
            "report_udp_max_bytes",
            "60000",
            "Largest report answer sent as one UDP datagram; larger ones are refused with too_large_for_udp",
        ),
        (
            "usage_retention_days",
            "93",
            "beast sync deletes raw usage (and report log) rows older than this many days; daily rollups stay",
        ),
        (
            "rollup_delay_ms",
            "600000",
            "A UTC day is rolled up this long after it ended, once late usage batches have landed",
        ),
        (
            "rollup_interval_ms",
            "60000",
            "How often a report node looks for days to roll up",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_have_25_prewarm_assets_per_exchange_and_majors_everywhere() {
        let rows = seeded_asset_map().unwrap();
        // Coinbase's 25 already include the 8 majors; the others gain 8 rows each.
        for (ex, expected) in [
            ("coinbase", 25),
            ("gemini", 33),
            ("kraken", 33),
            ("gateio", 33),
            ("cryptocom", 33),
            ("okx", 33),
        ] {
            let mine: Vec<_> = rows.iter().filter(|r| r.exchange == ex).collect();
            assert_eq!(mine.len(), expected, "{ex}");
            for major in ["BTC", "ETH", "SOL", "XRP", "DOGE", "LTC", "LINK", "AVAX"] {
                assert!(
                    mine.iter()
                        .any(|r| r.asset == major && r.category == "major"),
                    "{ex} lacks {major}"
                );
            }
        }
        assert_eq!(rows.len(), 150 + 5 * 8);
        assert!(rows.iter().all(|r| r.prewarm && r.enabled));
        let kraken_sc = rows
            .iter()
            .find(|r| r.exchange == "kraken" && r.asset == "SC")
            .unwrap();
        assert_eq!(
            (kraken_sc.symbol.as_str(), kraken_sc.quote.as_str()),
            ("SC/USD", "USD")
        );
        let gemini = rows
            .iter()
            .find(|r| r.exchange == "gemini" && r.asset == "CHILLGUY")
            .unwrap();
        assert_eq!(gemini.symbol, "chillguyusd");
        let okx = rows
            .iter()
            .find(|r| r.exchange == "okx" && r.asset == "BTC")
            .unwrap();
        assert_eq!(
            (okx.symbol.as_str(), okx.quote.as_str()),
            ("BTC-USDT", "USDT")
        );
    }

    #[test]
    fn six_exchanges_and_six_tiers_are_seeded() {
        assert_eq!(seeded_exchanges().unwrap().len(), 6);
        let tiers: Vec<String> = seeded_tiers()
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(
            tiers,
            ["demo", "free", "starter", "pro", "enterprise", "partner"]
        );
    }
}
