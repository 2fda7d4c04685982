//! `beast simulate`: the six exchange protocols on loopback, until Ctrl-C or SIGTERM.

use beast_simulator::{Simulator, SimulatorOptions};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{cli::SimulateArgs, telemetry};

pub async fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    telemetry::init("text")?;
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let options = SimulatorOptions {
        bind: args.bind,
        ..SimulatorOptions::default()
    };
    let sim = Simulator::start(options, stop.clone(), &tracker).await?;
    println!("simulator listening on {}", sim.addr());
    for def in beast_store::seeded_exchanges()? {
        let mut local = def.clone();
        if sim.redirect(&mut local) {
            println!(
                "{:<10} ws {}  rest {}",
                def.name, local.ws_url, local.rest_url
            );
        }
    }
    super::shutdown_signal().await;
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    Ok(())
}
