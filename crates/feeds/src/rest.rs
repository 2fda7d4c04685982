//! An exchange's REST ticker, read with its definition: `rest_url` with `{SYMBOL}` filled in,
//! the price at `rest_price_path` (exact text), the time at `rest_time_path`. Used to refresh
//! quiet pairs, to stand in while a WebSocket is down, and for on-demand assets.

use std::time::Duration;

use beast_core::{Price, TimeFormat, now_ms};
use serde_json::Value;
use serde_json_path::JsonPath;

use crate::{
    CompiledDefinition, connector::caught, extract::positive_price, feed::PriceUpdate, timefmt,
};

/// Longest REST answer read; tickers are a few kilobytes.
const MAX_BODY: usize = 256 * 1024;

/// Why a REST ticker gave no price.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("{exchange} has no REST ticker")]
    NoTicker { exchange: String },
    #[error("{exchange} REST ticker: {message}")]
    Failed { exchange: String, message: String },
}

/// One HTTP client for every exchange's ticker, with a per-request timeout.
#[derive(Debug, Clone)]
pub struct RestClient {
    http: reqwest::Client,
}

impl RestClient {
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("trinity-beast/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http })
    }

    /// The current price of `symbol` from `def`'s REST ticker.
    pub(crate) async fn ticker(
        &self,
        def: &CompiledDefinition,
        symbol: &str,
    ) -> Result<PriceUpdate, RestError> {
        let exchange = &def.def.name;
        // A definition has a REST price path exactly when it has a `rest_url`.
        let Some(price_path) = &def.rest_price else {
            return Err(RestError::NoTicker {
                exchange: exchange.clone(),
            });
        };
        let failed = |message: String| RestError::Failed {
            exchange: exchange.clone(),
            message,
        };
        let url = def.def.rest_url.replace("{SYMBOL}", symbol);
        let mut response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| failed(format!("request failed: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            return Err(failed(format!("HTTP {status}")));
        }
        // Read up to the limit, never more: a huge answer is refused, not loaded.
        let too_large = || failed(format!("answer larger than {MAX_BODY} bytes"));
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| failed(format!("reading the answer: {e}")))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let received_ms = now_ms();
        // A panic reading the answer (a bug, on outside input) fails this fetch as a bad
        // answer does, so every caller backs off from it the same way; being a bug, it is
        // logged as a warning here (callers log failed fetches at debug).
        caught(async { read_answer(def, price_path, &body) })
            .await
            .unwrap_or_else(|panic| {
                tracing::warn!(%exchange, symbol, %panic, "reading a REST ticker answer panicked");
                Err(format!("reading the answer panicked: {panic}"))
            })
            .map(|(price, time_exchange_ms)| PriceUpdate {
                price,
                time_exchange_ms,
                received_ms,
                replayed: false,
            })
            .map_err(failed)
    }
}

/// The price (and the exchange's time, if it gives one) in a REST ticker's answer.
fn read_answer(
    def: &CompiledDefinition,
    price_path: &JsonPath,
    body: &[u8],
) -> Result<(Price, Option<i64>), String> {
    let json: Value =
        serde_json::from_slice(body).map_err(|e| format!("answer is not JSON: {e}"))?;
    let price = price_path
        .query(&json)
        .first()
        .and_then(positive_price)
        .ok_or_else(|| {
            format!(
                "no positive decimal at rest_price_path {}",
                def.def.rest_price_path
            )
        })?;
    let time_exchange_ms = def.rest_time.as_ref().and_then(|path| {
        path.query(&json)
            .first()
            .and_then(|v| rest_time_ms(v, def.def.time_format))
    });
    Ok((price, time_exchange_ms))
}

/// A REST time in the definition's format, else RFC 3339, else unix time of any unit: REST
/// APIs do not always write times the way their WebSocket does.
fn rest_time_ms(value: &Value, format: TimeFormat) -> Option<i64> {
    [format, TimeFormat::Rfc3339, TimeFormat::UnixAuto]
        .into_iter()
        .find_map(|f| timefmt::to_unix_ms(value, f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rest_times_are_read_in_any_common_form() {
        let ms = 1_700_000_000_123;
        assert_eq!(rest_time_ms(&json!(ms), TimeFormat::UnixMs), Some(ms));
        assert_eq!(
            rest_time_ms(&json!("2023-11-14T22:13:20.123Z"), TimeFormat::UnixMs),
            Some(ms)
        );
        assert_eq!(
            rest_time_ms(&json!("1700000000123"), TimeFormat::Rfc3339),
            Some(ms)
        );
        assert_eq!(rest_time_ms(&json!("soon"), TimeFormat::UnixMs), None);
    }

    /// A one-shot HTTP server on loopback answering `body`, with or without a length.
    async fn serve_once(body: Vec<u8>, with_length: bool) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 2048];
            let _ = stream.read(&mut request).await;
            let head = if with_length {
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len())
            } else {
                "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_owned()
            };
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&body).await;
        });
        format!("http://{addr}/ticker?instId={{SYMBOL}}")
    }

    #[tokio::test]
    async fn an_answer_over_the_size_limit_is_refused_with_or_without_a_length() {
        let mut okx = crate::definition::tests::seeded("okx");
        let client = RestClient::new(Duration::from_secs(5)).unwrap();
        let small = br#"{"data":[{"last":"64000.5","ts":"1700000000123"}]}"#.to_vec();
        okx.rest_url = serve_once(small, true).await;
        let def = CompiledDefinition::compile(okx.clone()).unwrap();
        let price = client.ticker(&def, "BTC-USDT").await.unwrap();
        assert_eq!(price.price.text(), "64000.5");
        for with_length in [true, false] {
            let mut huge = br#"{"data":[{"last":"1","pad":""#.to_vec();
            huge.resize(MAX_BODY + 10, b'x');
            okx.rest_url = serve_once(huge, with_length).await;
            let def = CompiledDefinition::compile(okx.clone()).unwrap();
            let error = client
                .ticker(&def, "BTC-USDT")
                .await
                .unwrap_err()
                .to_string();
            assert!(error.contains("larger than"), "{with_length}: {error}");
        }
    }
}
