//! What a stress run does, checked once up front: the target (resolved, with every request
//! prepared), the levels, the timing. Everything from the command line is validated here so
//! the workers never meet a bad value.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use reqwest::Url;

use super::{http, udp};
use crate::{
    cli::StressArgs,
    config::{KeyFlag, Secret},
};

/// The most workers one level may ask for.
const MAX_CONCURRENCY: usize = 100_000;
/// The longest a request may wait for its answer: an hour.
pub(super) const MAX_TIMEOUT_MS: u64 = 3_600_000;
/// The most UDP requests one socket keeps in flight.
const MAX_UDP_DEPTH: usize = 1024;

/// A validated stress run.
#[derive(Debug)]
pub struct Plan {
    /// The target as the user named it (without the key), for reports.
    pub target_url: String,
    pub target: Target,
    pub assets: Vec<String>,
    pub levels: Vec<usize>,
    /// How long each level sends requests.
    pub duration: Duration,
    /// How long one request may wait for its answer.
    pub timeout: Duration,
    /// UDP: requests in flight per socket.
    pub udp_depth: usize,
}

/// Where the load goes, with the requests prepared for that protocol.
#[derive(Debug, Clone)]
pub enum Target {
    Http(Arc<http::Requests>),
    Udp(Arc<udp::Requests>),
}

impl Target {
    pub fn protocol(&self) -> &'static str {
        match self {
            Target::Http(_) => "http",
            Target::Udp(_) => "udp",
        }
    }
}

impl Plan {
    /// Requests one worker keeps in flight: a UDP socket several, an HTTP connection one.
    pub fn per_worker(&self) -> usize {
        match &self.target {
            Target::Http(_) => 1,
            Target::Udp(_) => self.udp_depth,
        }
    }

    /// Workers (connections or sockets, one descriptor each) for `concurrency` in flight.
    pub fn workers(&self, concurrency: usize) -> usize {
        concurrency.div_ceil(self.per_worker())
    }

    /// The id of the first worker of level `level` (an index into `levels`), the others
    /// following it: the levels before it numbered theirs from 0, so no two workers of a run
    /// share one, and neither do their UDP request ids (a late answer to an earlier level
    /// cannot be taken for an answer to this one's, whatever port its socket is given).
    pub fn first_worker_id(&self, level: usize) -> usize {
        self.levels[..level].iter().map(|&c| self.workers(c)).sum()
    }

    /// Validates the arguments and resolves the target's host.
    pub async fn new(args: &StressArgs) -> anyhow::Result<Plan> {
        let secrets = keys(args)?;
        let keys: Vec<&str> = secrets.iter().map(Secret::expose).collect();
        let assets: Vec<String> = args
            .assets
            .iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        if assets.is_empty() {
            bail!("--assets names no asset");
        }
        if args.levels.is_empty() {
            bail!("--levels names no level");
        }
        if let Some(bad) = args.levels.iter().find(|&&n| n == 0 || n > MAX_CONCURRENCY) {
            bail!("--levels: {bad} in flight is out of range (1..={MAX_CONCURRENCY})");
        }
        if !(args.duration_s.is_finite() && args.duration_s > 0.0 && args.duration_s <= 86_400.0) {
            bail!(
                "--duration-s must be more than 0 and at most 86400, not {}",
                args.duration_s
            );
        }
        if !(1..=MAX_TIMEOUT_MS).contains(&args.timeout_ms) {
            bail!(
                "--timeout-ms must be 1 to {MAX_TIMEOUT_MS}, not {}",
                args.timeout_ms
            );
        }
        if !(1..=MAX_UDP_DEPTH).contains(&args.udp_depth) {
            bail!(
                "--udp-depth must be 1 to {MAX_UDP_DEPTH}, not {}",
                args.udp_depth
            );
        }

        let url = Url::parse(&args.target).with_context(|| {
            format!(
                "--target {:?} is not a URL (http://HOST:PORT or udp://HOST:PORT)",
                args.target
            )
        })?;
        match url.scheme() {
            "http" | "udp" => {}
            "https" => bail!(
                "--target {:?}: https is not supported; point it at the node's plain HTTP listener",
                args.target
            ),
            other => bail!(
                "--target {:?}: unsupported scheme {other:?} (http://HOST:PORT or udp://HOST:PORT)",
                args.target
            ),
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .with_context(|| format!("--target {:?} names no host", args.target))?
            .to_owned();
        let port = url.port_or_known_default().with_context(|| {
            format!("--target {:?} names no port (udp://HOST:PORT)", args.target)
        })?;
        let addr = resolve(&host, port).await?;
        let target = if url.scheme() == "http" {
            let path = http_path(&url, args.path.as_deref())?;
            let authority = format!("{host}:{port}");
            Target::Http(Arc::new(http::Requests::new(
                addr, &authority, &path, &keys, &assets,
            )?))
        } else {
            if (!url.path().is_empty() && url.path() != "/") || url.query().is_some() {
                bail!(
                    "--target {:?}: a UDP target has no path or query",
                    args.target
                );
            }
            if args.path.is_some() {
                bail!("--path is for HTTP targets only");
            }
            Target::Udp(Arc::new(udp::Requests::new(addr, &keys, &assets)?))
        };
        Ok(Plan {
            target_url: format!("{}://{host}:{port}", url.scheme()),
            target,
            assets,
            levels: args.levels.clone(),
            duration: Duration::from_secs_f64(args.duration_s),
            timeout: Duration::from_millis(args.timeout_ms),
            udp_depth: args.udp_depth,
        })
    }
}

/// The path asked for: `--path`, else the target URL's own path, else `/price`.
fn http_path(url: &Url, flag: Option<&str>) -> anyhow::Result<String> {
    if url.query().is_some() {
        bail!("--target {url}: no query string, please (`?asset=` is added per request)");
    }
    let from_url = Some(url.path()).filter(|p| *p != "/" && !p.is_empty());
    let path = match (flag, from_url) {
        (Some(flag), Some(from_url)) if flag != from_url => {
            bail!("--path {flag:?} disagrees with the target's path {from_url:?}")
        }
        (Some(p), _) | (None, Some(p)) => p.to_owned(),
        (None, None) => "/price".to_owned(),
    };
    if !path.starts_with('/') || path.contains(['?', '#']) {
        bail!("--path {path:?} must start with / and carry no query");
    }
    Ok(path)
}

/// The keys requests take in turn: the lines of `--keys-file`, or `--key`.
fn keys(args: &StressArgs) -> anyhow::Result<Vec<Secret>> {
    let Some(path) = &args.keys_file else {
        return KeyFlag::given(&args.key)
            .map(|key| vec![key.clone()])
            .context("no key: give --key (or BEAST_STRESS_KEY) or --keys-file");
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --keys-file {}", path.display()))?;
    let keys: Vec<Secret> = text.lines().filter_map(Secret::new).collect();
    if keys.is_empty() {
        bail!("--keys-file {} holds no key", path.display());
    }
    Ok(keys)
}

/// The first address the target's host resolves to (an IP literal is taken as it is).
async fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} resolves to no address"))
}

/// The order requests take keys and assets in: every asset, then the next key (`make` builds
/// one request from a key's and an asset's prepared parts).
pub fn in_turn<K, A, R>(keys: &[K], assets: &[A], make: impl Fn(&K, &A) -> R) -> Vec<R> {
    keys.iter()
        .flat_map(|key| assets.iter().map(|asset| make(key, asset)))
        .collect()
}
