//! `beast exchanges ...`: exchanges and asset mappings in the store, changed with the same
//! validation as the admin API (running nodes apply the changes within a second), plus
//! `parse` to try a definition on raw frames and `status` to read a running node's feeds.

use std::{
    io::{BufRead, Read, Write},
    path::Path,
};

use anyhow::{Context, bail};
use beast_api::manage;
use beast_core::{AssetMapping, ExchangeDefinition};
use beast_feeds::{CompiledDefinition, Frame};
use beast_store::Store;
use serde::de::DeserializeOwned;

use crate::{cli::ExchangesCommand, config::ConfigArgs};

pub async fn run(config: &ConfigArgs, command: ExchangesCommand) -> anyhow::Result<()> {
    match command {
        // These two need no store: one asks a running node, the other reads a file.
        ExchangesCommand::Status { url } => status(config, &url).await,
        ExchangesCommand::Parse {
            definition: Some(file),
            ..
        } => parse(read_json(&file)?),
        command => super::with_store(config, async |store| execute(store, command).await).await,
    }
}

async fn execute(store: &dyn Store, command: ExchangesCommand) -> anyhow::Result<()> {
    match command {
        ExchangesCommand::List => {
            let mappings = store.asset_map().await?;
            say!(
                "{:<12} {:<14} {:<8} {:>7}  ws_url",
                "name",
                "source",
                "enabled",
                "assets"
            )?;
            for d in store.exchange_feeds().await? {
                let assets = mappings.iter().filter(|m| m.exchange == d.name).count();
                say!(
                    "{:<12} {:<14} {:<8} {:>7}  {}",
                    d.name,
                    d.source,
                    d.enabled,
                    assets,
                    d.ws_url
                )?;
            }
        }
        ExchangesCommand::Show { name } => {
            let def = stored_definition(store, &name).await?;
            say!("{}", serde_json::to_string_pretty(&def)?)?;
        }
        ExchangesCommand::Save { definition } => {
            let def: ExchangeDefinition = read_json(&definition)?;
            let saved = manage::save_exchange(store, def).await?;
            say!("saved exchange {}", saved.name)?;
        }
        ExchangesCommand::Toggle { name, enabled } => {
            let enabled = manage::toggle_exchange(store, &name, enabled).await?;
            say!("{name} enabled={enabled}")?;
        }
        ExchangesCommand::Assets { exchange } => {
            say!(
                "{:<12} {:<10} {:<14} {:<6} {:<8} {:<8} category",
                "exchange",
                "asset",
                "symbol",
                "quote",
                "enabled",
                "prewarm"
            )?;
            for m in store
                .asset_map()
                .await?
                .into_iter()
                .filter(|m| exchange.as_ref().is_none_or(|e| *e == m.exchange))
            {
                say!(
                    "{:<12} {:<10} {:<14} {:<6} {:<8} {:<8} {}",
                    m.exchange,
                    m.asset,
                    m.symbol,
                    m.quote,
                    m.enabled,
                    m.prewarm,
                    m.category
                )?;
            }
        }
        ExchangesCommand::AssetsSave { file } => {
            let rows: Vec<AssetMapping> =
                from_json(manage::mapping_rows(read_value(&file)?), &file)?;
            let saved = manage::save_assets(store, &rows).await?;
            say!("saved {} mappings", saved.len())?;
        }
        ExchangesCommand::AssetsToggle {
            exchange,
            asset,
            enabled,
            prewarm,
        } => {
            if enabled.is_none() && prewarm.is_none() {
                bail!("give --enabled and/or --prewarm");
            }
            let m = manage::toggle_asset(store, &exchange, &asset, enabled, prewarm).await?;
            say!(
                "{} {} enabled={} prewarm={}",
                m.exchange,
                m.asset,
                m.enabled,
                m.prewarm
            )?;
        }
        ExchangesCommand::Parse {
            exchange: Some(name),
            ..
        } => parse(stored_definition(store, &name).await?)?,
        ExchangesCommand::Parse { .. } => bail!("give --exchange NAME or --definition FILE"),
        ExchangesCommand::Status { url } => bail!("status talks to a node ({url}), not the store"),
    }
    Ok(())
}

/// Runs stdin's frames through `def`, trades to stdout, bad frames to stderr.
fn parse(def: ExchangeDefinition) -> anyhow::Result<()> {
    let compiled = CompiledDefinition::compile(def)?;
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    parse_frames(&compiled, stdin, stdout, &mut std::io::stderr().lock())
}

async fn stored_definition(store: &dyn Store, name: &str) -> anyhow::Result<ExchangeDefinition> {
    store
        .exchange_feeds()
        .await?
        .into_iter()
        .find(|d| d.name == name)
        .with_context(|| format!("no exchange named {name:?} in the store"))
}

/// JSON from a file, or stdin for `-`.
fn read_json<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    from_json(read_value(path)?, path)
}

fn read_value(path: &Path) -> anyhow::Result<serde_json::Value> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    }
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// `value` read from `path` as a `T`; the error names the offending field
/// (`time_format: unknown variant ...`).
fn from_json<T: DeserializeOwned>(value: serde_json::Value, path: &Path) -> anyhow::Result<T> {
    serde_path_to_error::deserialize(value).with_context(|| format!("reading {}", path.display()))
}

/// One line per trade in each frame: `symbol<TAB>price<TAB>size<TAB>timestamp_ms`, with the
/// price and size exactly as the frame wrote them (empty when the definition has no size or
/// time path). Frames that are not trades print nothing; malformed ones, and trades that cannot
/// be read (the rest of their frame is printed), are reported on `errors`, best effort: only a
/// failed write of the trades ends the command ([`StdoutClosed`](super::StdoutClosed) if
/// their reader has gone).
fn parse_frames(
    def: &CompiledDefinition,
    input: impl BufRead,
    mut output: impl Write,
    errors: &mut impl Write,
) -> anyhow::Result<()> {
    for (number, line) in input.lines().enumerate() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let mut report = |e: &dyn std::fmt::Display| {
            let _ = writeln!(errors, "line {}: {e}", number + 1);
        };
        match def.read_frame(&line) {
            Ok(Frame::Trades {
                trades, refused, ..
            }) => {
                for e in &refused {
                    report(e);
                }
                for t in trades {
                    writeln!(
                        output,
                        "{}\t{}\t{}\t{}",
                        t.symbol,
                        t.price,
                        t.size.map(|s| s.to_string()).unwrap_or_default(),
                        t.time_ms.map(|ms| ms.to_string()).unwrap_or_default()
                    )
                    .map_err(super::StdoutClosed::or_other)?;
                }
            }
            Ok(_) => {}
            Err(e) => report(&e),
        }
    }
    output.flush().map_err(super::StdoutClosed::or_other)
}

async fn status(config: &ConfigArgs, url: &str) -> anyhow::Result<()> {
    let settings = config.settings(&Default::default())?;
    let key = settings.existing_admin_key()?.with_context(|| {
        format!(
            "no admin key: set BEAST_ADMIN_KEY or create {}",
            settings.admin_key_path().display()
        )
    })?;
    let response = reqwest::Client::new()
        .get(format!("{}/admin/feed-status", url.trim_end_matches('/')))
        .bearer_auth(key)
        .send()
        .await
        .with_context(|| format!("reaching {url}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.context("reading the answer")?;
    if !status.is_success() {
        bail!("{status}: {body}");
    }
    say!("{}", serde_json::to_string_pretty(&body)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OKX's seeded definition, compiled.
    fn okx() -> CompiledDefinition {
        let defs = beast_store::seeded_exchanges().unwrap();
        let okx = defs.into_iter().find(|d| d.name == "okx").unwrap();
        CompiledDefinition::compile(okx).unwrap()
    }

    #[test]
    fn parse_prints_each_trade_and_reports_bad_frames() {
        let compiled = okx();
        let input = concat!(
            r#"{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"1","px":"42219.9","sz":"0.12060306","side":"buy","ts":"1630048897897"},{"instId":"BTC-USDT","tradeId":"2","px":"42220","sz":"1","side":"sell","ts":"1630048897898"}]}"#,
            "\n",
            r#"{"event":"subscribe","arg":{"channel":"trades","instId":"BTC-USDT"}}"#,
            "\n",
            "{\"arg\":{\"chan\n",
            "pong\n",
            r#"{"arg":{"channel":"trades","instId":"ETH-USDT"},"data":[{"instId":"ETH-USDT","tradeId":"3","px":"oops","sz":"1","ts":"1630048897899"},{"instId":"ETH-USDT","tradeId":"4","px":"3000.5","sz":"2","ts":"1630048897900"}]}"#,
            "\n",
        );
        let (mut out, mut err) = (Vec::new(), Vec::new());
        parse_frames(&compiled, input.as_bytes(), &mut out, &mut err).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "BTC-USDT\t42219.9\t0.12060306\t1630048897897\nBTC-USDT\t42220\t1\t1630048897898\n\
             ETH-USDT\t3000.5\t2\t1630048897900\n"
        );
        // The bad trade is reported and its neighbour in the same frame still printed.
        let err = String::from_utf8(err).unwrap();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{err}");
        assert!(lines[0].starts_with("line 3: malformed JSON"), "{err}");
        assert!(
            lines[1].starts_with("line 5: trade field `price_path`"),
            "{err}"
        );
    }

    /// A pipe whose reader has gone.
    struct Gone;

    impl Write for Gone {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn only_a_gone_trade_reader_ends_parse_and_then_as_stdout_closed() {
        let compiled = okx();
        let input = concat!(
            "{\"arg\":{\"chan\n",
            r#"{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"1","px":"42219.9","sz":"1","ts":"1630048897897"}]}"#,
            "\n",
        );
        // Errors nobody reads: the trades are still printed.
        let mut out = Vec::new();
        parse_frames(&compiled, input.as_bytes(), &mut out, &mut Gone).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "BTC-USDT\t42219.9\t1\t1630048897897\n"
        );
        // Trades nobody reads: the command ends as StdoutClosed, which main ends quietly.
        let e = parse_frames(&compiled, input.as_bytes(), Gone, &mut Vec::new()).unwrap_err();
        assert!(e.is::<crate::commands::StdoutClosed>(), "{e}");
    }
}
