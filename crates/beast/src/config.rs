//! One typed settings tree. Layers, lowest first: built-in defaults < `beast.toml` <
//! environment (`BEAST_*`, and the seeds' `SERVER_TYPE`) < command-line flags. Clap reads the
//! flags and the environment; the file sits below them. Unknown keys in the file are errors.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};

/// A node's settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Data directory; the SQLite database is `<data_dir>/beast.sqlite3`.
    pub data_dir: PathBuf,
    /// Comma-separated roles: `price`, `report`, `webhook`.
    pub roles: String,
    pub price_http: SocketAddr,
    pub price_health: SocketAddr,
    /// UDP price protocol.
    pub price_udp: SocketAddr,
    pub report_http: SocketAddr,
    pub report_health: SocketAddr,
    /// UDP report protocol.
    pub report_udp: SocketAddr,
    pub webhook_health: SocketAddr,
    /// This node's name in usage rows and status.
    pub node_id: String,
    /// Run the built-in exchange simulator and point every feed at it.
    pub simulate: bool,
    /// Log format: `text` or `json`.
    pub log_format: String,
    /// Where the simulator listens with `simulate` (port 0 = any free port; it is logged).
    pub simulator_addr: SocketAddr,
    /// File holding the admin key, used when `BEAST_ADMIN_KEY` is not set; created with a
    /// random key (mode 0600) if missing. Default: `<data_dir>/admin.key`.
    pub admin_key_file: Option<PathBuf>,
    /// The admin key from `BEAST_ADMIN_KEY`: taken from the environment only, never from the
    /// file or a flag, and never printed.
    #[serde(skip)]
    pub admin_key_env: Option<Secret>,
}

/// A secret (a key) from the command line, the environment or a file: trimmed, used and
/// compared, never printed (`Debug` shows no part of it).
#[derive(Clone, PartialEq)]
pub struct Secret(String);

impl Secret {
    /// Trimmed; `None` if blank.
    pub fn new(value: &str) -> Option<Secret> {
        let value = value.trim();
        (!value.is_empty()).then(|| Secret(value.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A key flag as given on the command line or by its environment variable: blank counts as
/// not given, so an exported but empty `BEAST_STRESS_KEY=` does not stop a command that takes
/// no key from it (`stress --keys-file`, `report` without `--url`). A command that needs the
/// key says so when there is none.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyFlag(Option<Secret>);

impl KeyFlag {
    /// The key of a flag that may be absent: `None` when absent or blank.
    pub fn given(flag: &Option<KeyFlag>) -> Option<&Secret> {
        flag.as_ref().and_then(|f| f.0.as_ref())
    }
}

impl std::str::FromStr for KeyFlag {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(KeyFlag(Secret::new(s)))
    }
}

impl Default for Settings {
    fn default() -> Self {
        let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
        Self {
            data_dir: PathBuf::from("./beast-data"),
            roles: "price,report".into(),
            price_http: any(8080),
            price_health: any(8081),
            price_udp: any(2679),
            report_http: any(9090),
            report_health: any(9091),
            report_udp: any(2680),
            webhook_health: any(8083),
            node_id: default_node_id(),
            simulate: false,
            log_format: "text".into(),
            simulator_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_key_file: None,
            admin_key_env: None,
        }
    }
}

fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node-1".into())
}

/// A role a node plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Price,
    Report,
    Webhook,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Price => "price",
            Role::Report => "report",
            Role::Webhook => "webhook",
        }
    }
}

impl Settings {
    /// The admin key: `BEAST_ADMIN_KEY` if set, else the key file, created with a random key
    /// (readable by the owner only) on first use. The key itself is never logged.
    pub fn admin_key(&self) -> anyhow::Result<String> {
        if let Some(key) = self.existing_admin_key()? {
            return Ok(key);
        }
        let path = self.admin_key_path();
        let key = beast_store::keys::generate_key();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        use std::{io::Write, os::unix::fs::OpenOptionsExt};
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        writeln!(file, "{key}")?;
        tracing::info!(file = %path.display(), "admin key created");
        Ok(key)
    }

    /// The admin key from `BEAST_ADMIN_KEY` or the key file, if either has one; never creates
    /// one (for clients of a node, such as `beast exchanges status`).
    pub fn existing_admin_key(&self) -> anyhow::Result<Option<String>> {
        if let Some(key) = &self.admin_key_env {
            return Ok(Some(key.expose().to_owned()));
        }
        let path = self.admin_key_path();
        match std::fs::read_to_string(&path) {
            Ok(key) => match Secret::new(&key) {
                Some(key) => Ok(Some(key.expose().to_owned())),
                None => bail!("admin key file {} is empty", path.display()),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn admin_key_path(&self) -> PathBuf {
        self.admin_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("admin.key"))
    }

    pub fn roles(&self) -> anyhow::Result<Vec<Role>> {
        let mut roles = Vec::new();
        for name in self
            .roles
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
        {
            let Some(role) = beast_core::by_name(
                &[Role::Price, Role::Report, Role::Webhook],
                Role::as_str,
                name,
            ) else {
                bail!("unknown role {name:?} (roles: price, report, webhook)");
            };
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        if roles.is_empty() {
            bail!("no role given (roles: price, report, webhook)");
        }
        Ok(roles)
    }
}

/// Where settings come from; flattened into every command that needs them.
#[derive(Debug, Clone, Args, Default)]
pub struct ConfigArgs {
    /// Settings file (TOML, same keys as the flags with `_`); missing default file is fine.
    #[arg(
        long,
        env = "BEAST_CONFIG",
        default_value = "beast.toml",
        global = true
    )]
    pub config: PathBuf,
    /// Data directory [default: ./beast-data]
    #[arg(long, env = "BEAST_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

/// Flags (and environment) of `beast serve`; unset ones fall through to the file and defaults.
#[derive(Debug, Clone, Args, Default, Serialize)]
pub struct ServeArgs {
    /// Roles to run, comma-separated: price, report, webhook [default: price,report]
    #[arg(long, env = "BEAST_ROLES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<String>,
    /// Price API listener [default: 0.0.0.0:8080]
    #[arg(long, env = "BEAST_PRICE_HTTP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_http: Option<SocketAddr>,
    /// Price health listener [default: 0.0.0.0:8081]
    #[arg(long, env = "BEAST_PRICE_HEALTH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_health: Option<SocketAddr>,
    /// UDP price listener [default: 0.0.0.0:2679]
    #[arg(long, env = "BEAST_PRICE_UDP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_udp: Option<SocketAddr>,
    /// Report API listener [default: 0.0.0.0:9090]
    #[arg(long, env = "BEAST_REPORT_HTTP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_http: Option<SocketAddr>,
    /// Report health listener [default: 0.0.0.0:9091]
    #[arg(long, env = "BEAST_REPORT_HEALTH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_health: Option<SocketAddr>,
    /// UDP report listener [default: 0.0.0.0:2680]
    #[arg(long, env = "BEAST_REPORT_UDP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_udp: Option<SocketAddr>,
    /// Webhook health listener [default: 0.0.0.0:8083]
    #[arg(long, env = "BEAST_WEBHOOK_HEALTH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_health: Option<SocketAddr>,
    /// Node name in usage rows and status [default: the host name]
    #[arg(long, env = "BEAST_NODE_ID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Run the built-in exchange simulator and point every feed at it (no internet needed)
    #[arg(long, env = "BEAST_SIMULATE", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulate: Option<bool>,
    /// Log format: text or json [default: text]
    #[arg(long, env = "BEAST_LOG_FORMAT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    /// Simulator listener with --simulate, for fault injection [default: 127.0.0.1:0]
    #[arg(long, env = "BEAST_SIMULATOR_ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulator_addr: Option<SocketAddr>,
    /// Admin key file, used when BEAST_ADMIN_KEY is unset [default: <data-dir>/admin.key]
    #[arg(long, env = "BEAST_ADMIN_KEY_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_key_file: Option<PathBuf>,
}

/// The seeds' `SERVER_TYPE` as roles.
fn roles_of_server_type(server_type: &str) -> anyhow::Result<&'static str> {
    Ok(match server_type {
        "APP_SERVER" => "price",
        "REPORT_SERVER" => "report",
        "APP_REPORT_SERVER" => "price,report",
        "WEBHOOK_SERVER" => "webhook",
        other => bail!(
            "unknown SERVER_TYPE {other:?} (APP_SERVER, REPORT_SERVER, APP_REPORT_SERVER, WEBHOOK_SERVER)"
        ),
    })
}

impl ConfigArgs {
    /// Defaults < file < `overrides` (flags and environment, as read by clap).
    pub fn settings(&self, overrides: &ServeArgs) -> anyhow::Result<Settings> {
        let mut merged = match std::fs::read_to_string(&self.config) {
            Ok(text) => toml::from_str::<serde_json::Value>(&text)
                .with_context(|| format!("reading {}", self.config.display()))?,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && self.config == Path::new("beast.toml") =>
            {
                serde_json::json!({})
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.config.display())),
        };
        let mut layer = serde_json::to_value(overrides)?;
        if overrides.roles.is_none()
            && let Ok(server_type) = std::env::var("SERVER_TYPE")
        {
            layer["roles"] = roles_of_server_type(server_type.trim())?.into();
        }
        if let Some(dir) = &self.data_dir {
            layer["data_dir"] = serde_json::to_value(dir)?;
        }
        if let (Some(base), Some(top)) = (merged.as_object_mut(), layer.as_object()) {
            base.extend(top.clone());
        }
        let mut settings: Settings = serde_json::from_value(merged)
            .with_context(|| format!("invalid settings (file {})", self.config.display()))?;
        settings.admin_key_env = std::env::var("BEAST_ADMIN_KEY")
            .ok()
            .and_then(|key| Secret::new(&key));
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(text: &str) -> (tempfile::TempDir, ConfigArgs) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("beast.toml");
        std::fs::write(&path, text).unwrap();
        (
            dir,
            ConfigArgs {
                config: path,
                data_dir: None,
            },
        )
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let (_d, args) = with_file(
            "price_http = \"127.0.0.1:1111\"\nnode_id = \"from-file\"\nsimulate = true\n",
        );
        let flags = ServeArgs {
            node_id: Some("from-flag".into()),
            ..Default::default()
        };
        let s = args.settings(&flags).unwrap();
        assert_eq!(s.price_http, "127.0.0.1:1111".parse().unwrap());
        assert_eq!(s.node_id, "from-flag");
        assert!(s.simulate);
        assert_eq!(s.report_http, Settings::default().report_http);
    }

    #[test]
    fn admin_key_env_wins_over_the_key_file_and_is_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings {
            data_dir: dir.path().to_owned(),
            ..Default::default()
        };
        std::fs::write(settings.admin_key_path(), "from-file\n").unwrap();
        assert_eq!(settings.admin_key().unwrap(), "from-file");
        settings.admin_key_env = Secret::new("  from-env-7f3a  ");
        assert_eq!(settings.admin_key().unwrap(), "from-env-7f3a");
        let printed = format!("{settings:?}");
        assert!(!printed.contains("7f3a"), "{printed}");
        assert!(
            printed.contains("admin_key_env: Some(Secret(..))"),
            "{printed}"
        );
        assert_eq!(Secret::new(" \t"), None);
        // A blank flag (or an empty variable) is no key: the command decides whether it needs
        // one (stress's "no key" is tested with its plan).
        let parsed = <crate::cli::Cli as clap::Parser>::try_parse_from([
            "beast",
            "stress",
            "--target",
            "http://127.0.0.1:1",
            "--key",
            " ",
        ])
        .unwrap();
        let crate::cli::Command::Stress(stress) = parsed.command else {
            panic!("not stress")
        };
        assert_eq!(stress.key, Some(KeyFlag(None)));
        assert_eq!(KeyFlag::given(&stress.key), None);
    }

    #[test]
    fn a_typo_in_the_file_is_an_error_naming_the_key() {
        let (_d, args) = with_file("price_htp = \"127.0.0.1:1\"\n");
        let e = format!("{:#}", args.settings(&ServeArgs::default()).unwrap_err());
        assert!(e.contains("price_htp"), "{e}");
    }

    #[test]
    fn roles_are_parsed_and_checked() {
        let s = Settings {
            roles: "price, Webhook,PRICE".into(),
            ..Default::default()
        };
        assert_eq!(s.roles().unwrap(), vec![Role::Price, Role::Webhook]);
        let refused = |roles: &str| {
            Settings {
                roles: roles.into(),
                ..Default::default()
            }
            .roles()
            .map_err(|e| e.to_string())
        };
        assert!(refused("pricee").is_err_and(|e| e.contains("unknown role \"pricee\"")));
        assert!(refused(" , ").is_err_and(|e| e.contains("no role given")));
        assert_eq!(
            roles_of_server_type("APP_REPORT_SERVER").unwrap(),
            "price,report"
        );
        assert!(
            roles_of_server_type("X")
                .is_err_and(|e| e.to_string().contains("unknown SERVER_TYPE \"X\""))
        );
    }
}
