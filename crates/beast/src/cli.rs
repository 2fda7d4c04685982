//! The command line. Command names are part of the public contract; flags may grow.

use clap::{Parser, Subcommand};

use crate::config::{ConfigArgs, KeyFlag, ServeArgs};

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
    /// Load a node's price API (HTTP or UDP) with closed-loop workers at growing concurrency;
    /// report throughput, latency percentiles and errors by kind per level.
    Stress(StressArgs),
    /// A minimal HTTP server answering every request with the same bytes: the baseline
    /// `scripts/bench.sh` measures a node against.
    #[command(hide = true)]
    BenchBaseline(BenchBaselineArgs),
    /// Print usage reports: from the store directly (as the admin), or from a running node's
    /// report listener with `--url` and a key.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Maintenance: roll up finished days of usage, then delete raw usage older than the
    /// retention (`usage_retention_days`, default 93). Safe while nodes run; running it again
    /// does nothing new.
    Sync(SyncArgs),
    /// Fill the store with realistic usage for the report benchmark (`scripts/reports-bench.sh`).
    #[command(hide = true)]
    GenerateUsage(GenerateUsageArgs),
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Usage rows, newest first.
    Usage(ReportArgs),
    /// Totals, errors, cache tiers, latency percentiles; per asset, source, protocol and day.
    Summary(ReportArgs),
}

/// The report filters and format, as `/reports/usage` and `/reports/summary` take them.
#[derive(Debug, Clone, clap::Args, Default, serde::Serialize)]
pub struct ReportArgs {
    /// Start, inclusive: RFC 3339 or unix ms.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// End, exclusive: RFC 3339 or unix ms.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset: Option<String>,
    /// An exchange name or source tag.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// http, udp or ws.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// HTTP status of the answers.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// One key's usage (admin).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// json, csv, tsv or text.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Rows per page, or `all` (usage only).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_size: Option<String>,
    /// The next-page cursor printed by the previous page (usage only).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// A running node's report listener, e.g. http://127.0.0.1:9090; without it the store is
    /// read directly.
    #[arg(long)]
    #[serde(skip)]
    pub url: Option<String>,
    /// The key sent to `--url` (an API key, or the admin key).
    #[arg(long, env = "BEAST_API_KEY", hide_env_values = true)]
    #[serde(skip)]
    pub api_key: Option<KeyFlag>,
}

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// Keep this many days of raw usage instead of the `usage_retention_days` parameter.
    #[arg(long)]
    pub retention_days: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct GenerateUsageArgs {
    /// Raw usage rows to write.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Spread over this many days before now.
    #[arg(long, default_value_t = 90)]
    pub days: u64,
    /// Keys to spread them over (created, tier pro); the first gets a tenth of all rows.
    #[arg(long, default_value_t = 50)]
    pub keys: u64,
    /// Random seed, for repeatable data.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

#[derive(Debug, clap::Args)]
pub struct StressArgs {
    /// The node's price listener: http://HOST:PORT or udp://HOST:PORT.
    #[arg(long)]
    pub target: String,
    /// API key sent with every request (required unless --keys-file is given).
    #[arg(long, env = "BEAST_STRESS_KEY", hide_env_values = true)]
    pub key: Option<KeyFlag>,
    /// A file of API keys, one per line, taken in turn (every asset, then the next key), so
    /// that many keys are active at once as on a node with many customers. Takes precedence
    /// over --key.
    #[arg(long)]
    pub keys_file: Option<std::path::PathBuf>,
    /// Assets asked for, in turn.
    #[arg(long, value_delimiter = ',', default_value = "BTC,ETH")]
    pub assets: Vec<String>,
    /// Concurrency levels (requests in flight), run one after the other.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2,4,8,16,32,64,128,256,512,1024,2048,4096"
    )]
    pub levels: Vec<usize>,
    /// Seconds each level runs (fractions allowed, e.g. 0.5).
    #[arg(long, default_value_t = 5.0)]
    pub duration_s: f64,
    /// UDP: requests each socket keeps in flight, so a level of N runs N / this sockets (1:
    /// one socket per request in flight). Replies are matched by id either way.
    #[arg(long, default_value_t = 8)]
    pub udp_depth: usize,
    /// A request with no answer after this long counts as a `timeout` error.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// HTTP path asked for (`?asset=X` is appended); default `/price`, or the target's path.
    #[arg(long)]
    pub path: Option<String>,
    /// Print one JSON document on stdout at the end instead of a table (no progress display).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct BenchBaselineArgs {
    /// Address to listen on (port 0 = any free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub bind: std::net::SocketAddr,
    /// The bytes every answer carries (as `application/json`).
    #[arg(long)]
    pub body_file: std::path::PathBuf,
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
