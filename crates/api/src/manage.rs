//! Exchanges and asset mappings managed as data, live. The operations here validate and write
//! rows; the admin API and the `beast exchanges` commands both call them. A running node
//! applies the rows with [`AppState::apply_exchanges`]: right away after its own admin API
//! wrote them, and within `exchanges_reload_ms` when another process (the CLI, another node)
//! did, by polling the store's exchanges revision.

use std::{sync::Arc, time::Duration};

use beast_core::{ApiError, AssetMapping, ExchangeDefinition};
use beast_feeds::{CompiledDefinition, DefinitionError, validate_mapping};
use beast_store::{Area, Store, StoreError};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{AppState, Catalog, follow::follow};

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// `index` is the position of the offending row in a batch.
    #[error("{}{error}", index.map(|i| format!("row {i}: ")).unwrap_or_default())]
    Invalid {
        index: Option<usize>,
        error: DefinitionError,
    },
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ManageError> for ApiError {
    fn from(e: ManageError) -> Self {
        match e {
            ManageError::Invalid { index, error } => ApiError::InvalidField {
                field: match index {
                    Some(i) => format!("[{i}].{}", error.field),
                    None => error.field.to_owned(),
                },
                message: error.message,
            },
            ManageError::NotFound(what) => ApiError::NotFound(what),
            ManageError::Store(StoreError::Invalid(message)) => ApiError::BadRequest(message),
            ManageError::Store(e) => crate::internal("the store failed", &e),
        }
    }
}

/// Validates a definition (every path, template and format) and saves it, replacing the
/// stored one of the same name.
pub async fn save_exchange(
    store: &dyn Store,
    definition: ExchangeDefinition,
) -> Result<ExchangeDefinition, ManageError> {
    let compiled = CompiledDefinition::compile(definition)
        .map_err(|error| ManageError::Invalid { index: None, error })?;
    store.save_exchange(&compiled.def).await?;
    Ok(compiled.def)
}

/// Enables or disables an exchange (`None` flips it); returns the new state.
pub async fn toggle_exchange(
    store: &dyn Store,
    name: &str,
    enabled: Option<bool>,
) -> Result<bool, ManageError> {
    store
        .set_exchange_enabled(name, enabled)
        .await?
        .ok_or_else(|| ManageError::NotFound(format!("no exchange named {name:?}")))
}

/// The rows of a mapping batch as given: a bare array, or `{"assets": [...]}`.
pub fn mapping_rows(batch: Value) -> Value {
    match batch {
        Value::Object(mut o) if o.contains_key("assets") => o.remove("assets").unwrap_or_default(),
        other => other,
    }
}

/// Validates a batch of mappings and saves them all, or none.
pub async fn save_assets(
    store: &dyn Store,
    mappings: &[AssetMapping],
) -> Result<Vec<AssetMapping>, ManageError> {
    let exchanges: Vec<String> = store
        .exchange_feeds()
        .await?
        .into_iter()
        .map(|d| d.name)
        .collect();
    let names: Vec<&str> = exchanges.iter().map(String::as_str).collect();
    let valid = mappings
        .iter()
        .enumerate()
        .map(|(i, m)| {
            validate_mapping(m, &names).map_err(|error| ManageError::Invalid {
                index: Some(i),
                error,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    store.save_asset_mappings(&valid).await?;
    Ok(valid)
}

/// Sets `enabled` and/or `prewarm` of one mapping; returns it as stored now.
pub async fn toggle_asset(
    store: &dyn Store,
    exchange: &str,
    asset: &str,
    enabled: Option<bool>,
    prewarm: Option<bool>,
) -> Result<AssetMapping, ManageError> {
    let asset = beast_core::normalize_asset(asset).ok_or_else(|| ManageError::Invalid {
        index: None,
        error: DefinitionError {
            field: "asset",
            message: beast_core::not_an_asset(asset),
        },
    })?;
    let missing = || ManageError::NotFound(format!("{exchange:?} has no mapping for {asset:?}"));
    if !store
        .set_asset_flags(exchange, &asset, enabled, prewarm)
        .await?
    {
        return Err(missing());
    }
    store
        .asset_map()
        .await?
        .into_iter()
        .find(|m| m.exchange == exchange && m.asset == asset)
        .ok_or_else(missing)
}

impl AppState {
    /// Reads the exchanges and mappings and applies them to this node: feeds start, stop or
    /// restart as needed, and the catalog and the book's asset list are replaced. Returns the
    /// stored definitions that did not compile (left as they were).
    pub async fn apply_exchanges(&self) -> Result<Vec<(String, DefinitionError)>, StoreError> {
        let mut applied = self.applied.lock().await;
        let revision = self.store.revision(Area::Exchanges).await?;
        let definitions = self.store.exchange_feeds().await?;
        let mappings = self.store.asset_map().await?;
        // The book first: it drops prices of assets it does not know.
        let catalog = Catalog::new(&definitions, &mappings);
        self.book
            .set_assets(catalog.assets.keys().map(String::as_str));
        let errors = self.feeds.apply(&definitions, &mappings);
        for (name, error) in &errors {
            tracing::error!(exchange = %name, %error, "stored definition does not compile; not applied");
        }
        self.catalog.store(Arc::new(catalog));
        *applied = revision;
        Ok(errors)
    }

    /// Applies changes made by other processes, checking the store's revision every `period`,
    /// until `cancel` fires. Changes this node's admin API applied itself are not applied again.
    pub async fn keep_exchanges_in_step(self, period: Duration, cancel: CancellationToken) {
        let seen = *self.applied.lock().await;
        let reload = |revision| {
            let state = self.clone();
            async move {
                if *state.applied.lock().await == revision {
                    return true;
                }
                match state.apply_exchanges().await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot apply the exchanges configuration");
                        false
                    }
                }
            }
        };
        follow(
            self.store.clone(),
            Area::Exchanges,
            seen,
            period,
            cancel,
            reload,
        )
        .await;
    }
}
