//! `beast serve`: run a node until SIGTERM or Ctrl-C, then shut down gracefully.

use crate::{
    app::Application,
    config::{ConfigArgs, ServeArgs},
    telemetry,
};

pub async fn run(config: &ConfigArgs, args: &ServeArgs) -> anyhow::Result<()> {
    // Caught from the first moment: a signal while the node starts (reading its settings,
    // opening its store, binding) ends the start, which has nothing to flush yet.
    let stop = super::stop_on_signal(|| tracing::info!("shutdown requested"))?;
    let settings = config.settings(args)?;
    telemetry::init(&settings.log_format)?;
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("installing the TLS crypto provider"))?;
    let app = tokio::select! {
        app = Application::build(settings) => app?,
        _ = stop.cancelled() => return Ok(()),
    };
    app.run_until_stopped(stop).await
}
