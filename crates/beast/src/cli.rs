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
    /// Inspect exchanges and their asset mappings.
    #[command(subcommand)]
    Exchanges(ExchangesCommand),
}

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Address to listen on (port 0 = any free port).
    #[arg(long, default_value = "127.0.0.1:9900")]
    pub bind: std::net::SocketAddr,
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
    /// List asset mappings, optionally of one exchange.
    Assets {
        #[arg(long)]
        exchange: Option<String>,
    },
}
