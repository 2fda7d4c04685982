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
            let key = keys::generate_key();
            let record = store
                .create_api_key(
                    &keys::hash_key_hex(&key),
                    &keys::display_prefix(&key),
                    &name,
                    &tier,
                )
                .await?;
            say!(
                "created key {} (tier {}, name {:?}); it is shown only once:",
                record.id,
                record.tier,
                record.name
            )?;
            say!("{key}")?;
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
