//! `beast keys create|list|revoke`, working on the store directly. Running nodes pick up
//! changes within `keys_reload_ms`.

use anyhow::bail;
use beast_store::{Store, keys};

use crate::{cli::KeysCommand, config::ConfigArgs};

pub async fn run(config: &ConfigArgs, command: KeysCommand) -> anyhow::Result<()> {
    super::with_store(config, async |store| execute(store, command).await).await
}

async fn execute(store: &dyn Store, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create { tier, name } => {
            let (key, record) = keys::create(store, &name, &tier).await?;
            // One write: the key is shown whole or not at all.
            say!(
                "created key {} (tier {}, name {:?}); it is shown only once:\n{key}",
                record.id,
                record.tier,
                record.name
            )
            .map_err(|e| {
                anyhow::anyhow!(
                    "key {} was created but could not be shown ({e}); revoke it with `beast keys revoke {}`",
                    record.id,
                    record.id
                )
            })?;
        }
        KeysCommand::List => {
            say!(
                "{:>5}  {:<12} {:<11} {:<20} {:<8} {:>12}  status",
                "id",
                "prefix",
                "tier",
                "name",
                "month",
                "requests"
            )?;
            for k in store.api_keys().await? {
                let status = if k.revoked_at_ms.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                say!(
                    "{:>5}  {:<12} {:<11} {:<20} {:<8} {:>12}  {status}",
                    k.id,
                    k.key_prefix,
                    k.tier,
                    k.name,
                    k.usage_month,
                    k.usage_count
                )?;
            }
        }
        KeysCommand::Revoke { id } => {
            if !store.revoke_api_key(id).await? {
                bail!("no active key with id {id}");
            }
            say!("revoked key {id}")?;
        }
    }
    Ok(())
}
