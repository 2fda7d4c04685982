//! The command line. Command names are part of the public contract; flags may grow.

use clap::{Parser, Subcommand};

use crate::config::{ConfigArgs, ServeArgs};

#[derive(Debug, Parser)]
#[command(
    name = "beast",
    version,
    about = "Trinity Beast: real-time crypto prices from six exchanges, metered per API key"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (`--simulate` to run against the built-in exchange simulator).
    Serve(ServeArgs),
    /// Run the exchange simulator alone (six exchange protocols on loopback).
    Simulate(SimulateArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage exchanges and their asset mappings (as the admin API does); running nodes
    /// apply changes within a second.
    #[command(subcommand)]
    Exchanges(ExchangesCommand),
}

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Address to listen on (port 0 = any free port).
    #[arg(long, default_value = "127.0.0.1:9900")]
    pub bind: std::net::SocketAddr,
    #[command(subcommand)]
    pub action: Option<SimulateCommand>,
}

#[derive(Debug, Subcommand)]
pub enum SimulateCommand {
    /// Inject a fault into a running simulator (`beast simulate` or `serve --simulate`, whose
    /// simulator address is logged as listener "simulator").
    Fault {
        /// The simulator's address, e.g. http://127.0.0.1:9900
        #[arg(long, default_value = "http://127.0.0.1:9900")]
        url: String,
        /// One exchange (coinbase, gemini, kraken, gateio, cryptocom, okx); all if absent.
        #[arg(long)]
        exchange: Option<String>,
        /// drop, stall, stop_heartbeats, malformed, truncated, unknown_symbols, quiet,
        /// slow_rest, failing_rest or clear.
        #[arg(long)]
        kind: String,
        /// How long the fault lasts; until cleared if absent.
        #[arg(long)]
        duration_ms: Option<u64>,
        /// Delay added to REST answers (slow_rest).
        #[arg(long)]
        delay_ms: Option<u64>,
        /// Symbols that go quiet (quiet), comma-separated; all if absent.
        #[arg(long, value_delimiter = ',')]
        symbols: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; the key itself is printed once, on the last line of stdout.
    Create {
        /// Tier from rate_limit_template: demo, free, starter, pro, enterprise, partner.
        #[arg(long)]
        tier: String,
        /// A name to recognise the key by.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List keys (never the keys themselves).
    List,
    /// Revoke a key by id; running nodes stop accepting it within a second.
    Revoke {
        /// Key id, as shown by `keys list`.
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ExchangesCommand {
    /// List exchange definitions.
    List,
    /// Print one stored definition as JSON (a starting point for `save`).
    Show { name: String },
    /// Insert or replace a definition from a JSON file (`-` = stdin) with the
    /// `exchange_feeds` fields; refused, naming the field, if it does not validate.
    Save {
        #[arg(long)]
        definition: std::path::PathBuf,
    },
    /// Enable or disable an exchange (flips it without --enabled).
    Toggle {
        name: String,
        #[arg(long)]
        enabled: Option<bool>,
    },
    /// List asset mappings, optionally of one exchange.
    Assets {
        #[arg(long)]
        exchange: Option<String>,
    },
    /// Insert or replace asset mappings from a JSON file (`-` = stdin): an array of
    /// {exchange, asset, symbol, quote, enabled, prewarm, category}; all or none.
    AssetsSave {
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Set `enabled` and/or `prewarm` of one mapping.
    AssetsToggle {
        #[arg(long)]
        exchange: String,
        #[arg(long)]
        asset: String,
        #[arg(long)]
        enabled: Option<bool>,
        #[arg(long)]
        prewarm: Option<bool>,
    },
    /// Read raw WebSocket frames, one per line, on stdin and print each trade they carry as
    /// `symbol<TAB>price<TAB>size<TAB>timestamp_ms`; malformed frames are reported on stderr.
    Parse {
        /// A stored exchange.
        #[arg(
            long,
            conflicts_with = "definition",
            required_unless_present = "definition"
        )]
        exchange: Option<String>,
        /// An unsaved definition (JSON file with the `exchange_feeds` fields).
        #[arg(long)]
        definition: Option<std::path::PathBuf>,
    },
    /// Live feed status of a running node (its admin API).
    Status {
        /// The node's price listener.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
    },
}
