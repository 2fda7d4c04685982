//! One module per subcommand.

/// `println!` that returns an error instead of panicking: a command's output may go to a
/// pipe whose reader has gone (`beast keys list | head -1`). That error is [`StdoutClosed`],
/// which `main` ends quietly, as other command-line tools do. Most commands print after their
/// work, so leaving early never cuts it short; `beast stress` prints each level as it ends, so
/// a reader that leaves stops the run there.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*).map_err($crate::commands::StdoutClosed::or_other)
    }};
}

/// `eprintln!` that never panics: a note on standard error is best effort, and its reader may
/// have gone (`beast report ... 2>&1 | head -1`).
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod exchanges;
mod generate;
mod keys;
mod report;
mod serve;
mod simulate;
mod stress;
mod sync;

use anyhow::Context as _;

use crate::cli::{Cli, Command};

/// The reader of our standard output has gone: what it read was all it wanted.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output closed by its reader")
    }
}

impl std::error::Error for StdoutClosed {}

impl StdoutClosed {
    /// A failed write to standard output: [`StdoutClosed`] for a broken pipe, else itself.
    pub fn or_other(e: std::io::Error) -> anyhow::Error {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            StdoutClosed.into()
        } else {
            e.into()
        }
    }
}

/// Runs a parsed command line to completion.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(&cli.config, &args).await,
            Command::Simulate(args) => simulate::run(&args).await,
            Command::Keys(cmd) => keys::run(&cli.config, cmd).await,
            Command::Exchanges(cmd) => exchanges::run(&cli.config, cmd).await,
            Command::Stress(args) => stress::run(&args).await,
            Command::BenchBaseline(args) => stress::run_baseline(&args).await,
            Command::Report(cmd) => report::run(&cli.config, cmd).await,
            Command::Sync(args) => sync::run(&cli.config, &args).await,
            Command::GenerateUsage(args) => generate::run(&cli.config, &args).await,
        }
    })
}

/// Opens the store named by the settings (for commands that work on it directly), runs `work`
/// on it and closes it, whether `work` succeeded or not.
async fn with_store<T>(
    config: &crate::config::ConfigArgs,
    work: impl AsyncFnOnce(&beast_store::SqliteStore) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let settings = config.settings(&Default::default())?;
    let store = beast_store::SqliteStore::open(&settings.data_dir)
        .await
        .map_err(|e| {
            anyhow::anyhow!("opening the store in {}: {e}", settings.data_dir.display())
        })?;
    let result = work(&store).await;
    store.close().await;
    result
}

/// A token cancelled on SIGTERM or Ctrl-C, with `then` run first (a log line, say). Both
/// signals are caught from this call on, not from a task's first poll: call it before
/// announcing anything, so a signal sent as soon as a listener is announced stops the process
/// gracefully instead of killing it by the default action.
fn stop_on_signal(
    then: impl FnOnce() + Send + 'static,
) -> anyhow::Result<tokio_util::sync::CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("catching SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("catching Ctrl-C")?;
    let stop = tokio_util::sync::CancellationToken::new();
    let trigger = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
        then();
        trigger.cancel();
    });
    Ok(stop)
}
