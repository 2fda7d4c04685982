//! Structured logs to stderr: text or one JSON object per line, filtered by `RUST_LOG`
//! (default `info`).

use tracing_subscriber::{EnvFilter, fmt};

pub fn init(format: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let result = match format {
        "json" => builder.json().flatten_event(true).try_init(),
        "text" => builder.try_init(),
        other => anyhow::bail!("unknown log format {other:?} (text, json)"),
    };
    result.map_err(|e| anyhow::anyhow!("installing the logger: {e}"))
}
