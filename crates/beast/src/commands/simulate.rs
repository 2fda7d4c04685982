//! `beast simulate`: the six exchange protocols on loopback, until Ctrl-C or SIGTERM.

use std::fmt::Write as _;

use beast_simulator::{Simulator, SimulatorOptions};
use tokio_util::task::TaskTracker;

use anyhow::{Context, bail};
use beast_simulator::FaultRequest;

use crate::{
    cli::{SimulateArgs, SimulateCommand},
    telemetry,
};

pub async fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    if let Some(SimulateCommand::Fault {
        url,
        exchange,
        kind,
        duration_ms,
        delay_ms,
        symbols,
    }) = &args.action
    {
        let request = FaultRequest {
            exchange: exchange.clone(),
            kind: serde_json::from_value(serde_json::Value::String(kind.clone()))
                .with_context(|| format!("unknown fault kind {kind:?}"))?,
            duration_ms: *duration_ms,
            delay_ms: *delay_ms,
            symbols: symbols.clone(),
        };
        return inject(url, &request).await;
    }
    telemetry::init("text")?;
    let stop = super::stop_on_signal(|| {})?;
    let tracker = TaskTracker::new();
    let options = SimulatorOptions {
        bind: args.bind,
        ..SimulatorOptions::default()
    };
    let sim = Simulator::start(options, stop.clone(), &tracker).await?;
    // One write: a reader that takes the first line and goes (`| head -1`) leaves the
    // simulator running, not failing on a later line.
    let mut listing = format!("simulator listening on {}\n", sim.addr());
    for def in beast_store::seeded_exchanges()? {
        let mut local = def.clone();
        if sim.redirect(&mut local) {
            let _ = writeln!(
                listing,
                "{:<10} ws {}  rest {}",
                def.name, local.ws_url, local.rest_url
            );
        }
    }
    if let Err(e) = say!("{}", listing.trim_end()) {
        tracing::debug!(error = %e, "stdout closed; the simulator runs on");
    }
    stop.cancelled().await;
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Posts a fault to a running simulator and prints the faults now active.
async fn inject(url: &str, request: &FaultRequest) -> anyhow::Result<()> {
    let response = reqwest::Client::new()
        .post(format!("{}/_faults", url.trim_end_matches('/')))
        .json(request)
        .send()
        .await
        .with_context(|| format!("reaching the simulator at {url}"))?;
    let status = response.status();
    let body = response.text().await.context("reading the answer")?;
    if !status.is_success() {
        bail!("{status}: {body}");
    }
    say!("{body}")?;
    Ok(())
}
