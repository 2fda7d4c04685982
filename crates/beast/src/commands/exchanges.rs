//! `beast exchanges list|assets`: the exchange definitions and asset mappings in the store.

use beast_store::Store;

use crate::{cli::ExchangesCommand, config::ConfigArgs};

pub async fn run(config: &ConfigArgs, command: ExchangesCommand) -> anyhow::Result<()> {
    let store = super::open_store(config).await?;
    match command {
        ExchangesCommand::List => {
            let mappings = store.asset_map().await?;
            println!(
                "{:<12} {:<14} {:<8} {:>7}  ws_url",
                "name", "source", "enabled", "assets"
            );
            for d in store.exchange_feeds().await? {
                let assets = mappings.iter().filter(|m| m.exchange == d.name).count();
                println!(
                    "{:<12} {:<14} {:<8} {:>7}  {}",
                    d.name, d.source, d.enabled, assets, d.ws_url
                );
            }
        }
        ExchangesCommand::Assets { exchange } => {
            println!(
                "{:<12} {:<10} {:<14} {:<6} {:<8} {:<8} category",
                "exchange", "asset", "symbol", "quote", "enabled", "prewarm"
            );
            for m in store
                .asset_map()
                .await?
                .into_iter()
                .filter(|m| exchange.as_ref().is_none_or(|e| *e == m.exchange))
            {
                println!(
                    "{:<12} {:<10} {:<14} {:<6} {:<8} {:<8} {}",
                    m.exchange, m.asset, m.symbol, m.quote, m.enabled, m.prewarm, m.category
                );
            }
        }
    }
    store.close().await;
    Ok(())
}
