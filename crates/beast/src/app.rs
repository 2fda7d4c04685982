//! Wiring. [`Application::build`] opens the store, starts feeds (or the simulator and feeds
//! pointed at it), loads keys, starts the usage writer and binds every listener of the node's
//! roles, logging the addresses actually bound. [`Application::run_until_stopped`] serves
//! until the token fires, then shuts down in order: stop accepting and drain in-flight
//! requests, stop feeds, flush usage, close the store.

use std::{net::SocketAddr, sync::Arc, time::Duration, time::Instant};

use anyhow::Context;
use beast_api::{
    AdminKey, AppState, Catalog, KeyRing, RuntimeCounters, Shared, http, udp::UdpOptions,
};
use beast_book::Book;
use beast_core::ExchangeDefinition;
use beast_feeds::{FeedManager, FeedOptions, Redirect, RestClient};
use beast_reports::ReportOptions;
use beast_simulator::{Simulator, SimulatorOptions};
use beast_store::{SqliteStore, Store, parameter_defaults};
use beast_usage::WriterOptions;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::config::{Role, Settings};

/// Longest a stopping node waits for the requests in flight (a streamed export to a slow
/// reader, say) before it goes on without them.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// The smallest `udp_max_answer_bytes`: what every IPv4 host takes in one datagram (576
/// bytes, less the headers), room for the price of an asset from a few sources.
const MIN_UDP_ANSWER: u64 = 508;

/// Runtime parameters read from `application_parameters`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    usage: WriterOptions,
    keys_reload: Duration,
    exchanges_reload: Duration,
    udp: UdpOptions,
    /// Longest UDP price answer.
    udp_max_answer: usize,
    rest_timeout: Duration,
    pub(crate) http: http::HttpLimits,
    feeds: FeedOptions,
    /// Most price requests in flight at once.
    governor_max_in_flight: u64,
    /// Requests without a valid key, per address and minute (0: no limit).
    unpaid_per_minute: u32,
    pub(crate) reports: ReportOptions,
}

impl Params {
    pub(crate) fn from_rows(rows: &[(String, String)]) -> Self {
        // A stored value below `min` (or not a number) is logged and the default used.
        let at_least = |name: &str, min: u64| -> u64 {
            let valid = |v: &str| v.parse::<u64>().ok().filter(|v| *v >= min);
            let default = parameter_defaults()
                .iter()
                .find(|(n, _, _)| *n == name)
                .and_then(|(_, v, _)| valid(v));
            let stored = rows
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str());
            let value = match stored {
                Some(text) => valid(text).or_else(|| {
                    tracing::warn!(
                        parameter = name,
                        value = text,
                        "invalid parameter, using its default"
                    );
                    default
                }),
                None => default,
            };
            value.unwrap_or(min)
        };
        let get = |name: &str| at_least(name, 1);
        // Milliseconds as the feeds and rollups count them (i64), at least `min`.
        let ms = |name: &str, min: u64| at_least(name, min).min(i64::MAX as u64) as i64;
        Self {
            usage: WriterOptions {
                capacity: at_least(
                    "usage_channel_capacity",
                    beast_api::MOST_ROWS_PER_REQUEST as u64,
                ) as usize,
                batch_size: get("usage_batch_size") as usize,
                flush_interval: Duration::from_millis(get("usage_flush_ms")),
            },
            keys_reload: Duration::from_millis(get("keys_reload_ms")),
            exchanges_reload: Duration::from_millis(get("exchanges_reload_ms")),
            udp: UdpOptions {
                workers: std::thread::available_parallelism().map_or(2, usize::from),
                recv_buffer_bytes: get("udp_recv_buffer_bytes") as usize,
                send_buffer_bytes: get("udp_send_buffer_bytes") as usize,
            },
            udp_max_answer: at_least("udp_max_answer_bytes", MIN_UDP_ANSWER)
                .min(beast_api::udp::MAX_ANSWER as u64) as usize,
            rest_timeout: Duration::from_millis(get("rest_timeout_ms")),
            http: http::HttpLimits::new(
                Duration::from_millis(get("http_header_timeout_ms")),
                Duration::from_millis(get("http_write_timeout_ms")),
                get("http_max_header_bytes") as usize,
            ),
            feeds: FeedOptions {
                fresh_max_age_ms: ms("price_fresh_max_age_ms", 1),
                pair_quiet_ms: ms("pair_quiet_ms", 1),
                rest_fallback_ms: ms("rest_fallback_ms", 1),
                rest_concurrency: get("rest_concurrency") as usize,
                on_demand_retry_ms: ms("on_demand_retry_ms", 1),
            },
            governor_max_in_flight: get("governor_max_in_flight"),
            unpaid_per_minute: at_least("unauthenticated_per_ip_per_minute", 0)
                .min(u64::from(u32::MAX)) as u32,
            reports: ReportOptions {
                page_size_max: get("report_page_size_max"),
                udp_max_bytes: get("report_udp_max_bytes") as usize,
                retention_days: get("usage_retention_days"),
                // 0: a day is rolled up as soon as it ends.
                rollup_delay_ms: ms("rollup_delay_ms", 0),
                rollup_every: Duration::from_millis(get("rollup_interval_ms")),
            },
        }
    }
}

pub struct Application {
    servers: Vec<(TcpListener, http::Endpoint)>,
    /// The HTTP listeners' limits (header time and size, stalled writes).
    http: http::HttpLimits,
    /// The UDP price listener's sockets and the state they answer with.
    udp: Option<(Vec<std::net::UdpSocket>, AppState)>,
    /// The UDP report listener's socket.
    report_udp: Option<(std::net::UdpSocket, AppState)>,
    addresses: Vec<(String, SocketAddr)>,
    store: Arc<SqliteStore>,
    /// Feeds, key reload, simulator: stopped after the listeners have drained.
    background: CancellationToken,
    tracker: TaskTracker,
    /// Stopped last, so every usage event of a served request is written.
    usage_stop: CancellationToken,
    usage_writer: JoinHandle<()>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let roles = settings.roles()?;
        let store = Arc::new(
            SqliteStore::open(&settings.data_dir)
                .await
                .with_context(|| format!("opening the store in {}", settings.data_dir.display()))?,
        );
        let params = Params::from_rows(&store.parameters().await?);
        let background = CancellationToken::new();
        let tracker = TaskTracker::new();

        let mut addresses = Vec::new();
        let redirect: Option<Redirect> = if settings.simulate {
            let options = SimulatorOptions {
                bind: settings.simulator_addr,
                ..SimulatorOptions::default()
            };
            let sim = Simulator::start(options, background.clone(), &tracker)
                .await
                .context("starting the exchange simulator")?;
            tracing::info!(listener = "simulator", addr = %sim.addr(), "listening");
            addresses.push(("simulator".to_owned(), sim.addr()));
            Some(Arc::new(move |def: &mut ExchangeDefinition| {
                if !sim.redirect(def) {
                    tracing::warn!(exchange = %def.name, "not simulated: left pointing at its real endpoint");
                }
            }))
        } else {
            None
        };

        let book = Arc::new(Book::new(params.feeds.fresh_max_age_ms));
        let runs_feeds = roles
            .iter()
            .any(|r| matches!(r, Role::Price | Role::Webhook));
        let feeds = Arc::new(FeedManager::new(
            params.feeds,
            book.clone(),
            RestClient::new(params.rest_timeout).context("building the REST client")?,
            redirect,
            background.clone(),
            tracker.clone(),
        ));

        let keys = Arc::new(KeyRing::default());
        let keys_seen = keys.load(&*store).await?;
        tracker.spawn(keys.clone().keep_in_step(
            store.clone(),
            keys_seen,
            params.keys_reload,
            background.clone(),
        ));

        let (usage, writer) = beast_usage::pipeline(params.usage);
        let usage_stop = CancellationToken::new();
        let usage_writer = tokio::spawn(writer.run(store.clone(), usage_stop.clone()));

        let state = AppState::new(Shared {
            book,
            keys,
            usage,
            catalog: Default::default(),
            feeds,
            store: store.clone(),
            admin: AdminKey::new(&settings.admin_key()?),
            applied: tokio::sync::Mutex::default(),
            counters: Arc::new(RuntimeCounters::new(params.governor_max_in_flight)),
            node: settings.node_id.as_str().into(),
            roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
            started: Instant::now(),
            reports: params.reports,
            peers: Arc::new(beast_api::peers::PeerLimits::new(params.unpaid_per_minute)),
            udp_refusals: Arc::new(beast_api::peers::PeerLimits::new(params.unpaid_per_minute)),
            udp_max_answer: params.udp_max_answer,
        });
        if runs_feeds {
            state.apply_exchanges().await?;
            tracker.spawn(
                state
                    .clone()
                    .keep_exchanges_in_step(params.exchanges_reload, background.clone()),
            );
        } else {
            // No feeds, but the catalog still lists what the store holds.
            let catalog = Catalog::new(&store.exchange_feeds().await?, &store.asset_map().await?);
            state.catalog.store(Arc::new(catalog));
        }
        tracker.spawn(state.peers.clone().keep_trimmed(background.clone()));
        tracker.spawn(state.udp_refusals.clone().keep_trimmed(background.clone()));
        let mut wanted: Vec<(&str, SocketAddr, http::Endpoint)> = Vec::new();
        for role in &roles {
            match role {
                Role::Price => {
                    wanted.push((
                        "price-http",
                        settings.price_http,
                        http::Endpoint::price(state.clone()),
                    ));
                    wanted.push((
                        "price-health",
                        settings.price_health,
                        http::health_router(state.clone()).into(),
                    ));
                }
                Role::Report => {
                    wanted.push((
                        "report-http",
                        settings.report_http,
                        http::Endpoint::public(
                            beast_api::report::report_router(state.clone()),
                            state.clone(),
                        ),
                    ));
                    wanted.push((
                        "report-health",
                        settings.report_health,
                        http::health_router(state.clone()).into(),
                    ));
                }
                Role::Webhook => wanted.push((
                    "webhook-health",
                    settings.webhook_health,
                    http::health_router(state.clone()).into(),
                )),
            }
        }
        let mut udp = None;
        if roles.contains(&Role::Price) {
            let sockets = beast_api::udp::bind(settings.price_udp, params.udp)
                .with_context(|| format!("binding price-udp on {}", settings.price_udp))?;
            let bound = sockets
                .first()
                .map(std::net::UdpSocket::local_addr)
                .transpose()?
                .unwrap_or(settings.price_udp);
            tracing::info!(listener = "price-udp", addr = %bound, sockets = sockets.len(), "listening");
            addresses.push(("price-udp".to_owned(), bound));
            udp = Some((sockets, state.clone()));
        }
        let mut report_udp = None;
        if roles.contains(&Role::Report) {
            // One socket is plenty for reports; it gets the same buffers as the price sockets.
            let options = UdpOptions {
                workers: 1,
                ..params.udp
            };
            let socket = beast_api::udp::bind(settings.report_udp, options)
                .with_context(|| format!("binding report-udp on {}", settings.report_udp))?
                .pop()
                .context("binding report-udp gave no socket")?;
            let bound = socket.local_addr()?;
            tracing::info!(listener = "report-udp", addr = %bound, "listening");
            addresses.push(("report-udp".to_owned(), bound));
            report_udp = Some((socket, state.clone()));
            tracker.spawn(beast_reports::rollup::keep_rolled_up(
                store.clone(),
                params.reports.rollup_every,
                params.reports.rollup_delay_ms,
                background.clone(),
            ));
        }
        let mut servers = Vec::new();
        for (name, addr, endpoint) in wanted {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {name} on {addr}"))?;
            let bound = listener.local_addr()?;
            tracing::info!(listener = name, addr = %bound, "listening");
            addresses.push((name.to_owned(), bound));
            servers.push((listener, endpoint));
        }
        Ok(Self {
            servers,
            http: params.http,
            udp,
            report_udp,
            addresses,
            store,
            background,
            tracker,
            usage_stop,
            usage_writer,
        })
    }

    pub fn address(&self, name: &str) -> Option<SocketAddr> {
        self.addresses
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    pub async fn run_until_stopped(self, stop: CancellationToken) -> anyhow::Result<()> {
        let mut servers = tokio::task::JoinSet::new();
        for (listener, endpoint) in self.servers {
            let serving = http::serve(
                listener,
                move |peer| endpoint.for_peer(peer),
                self.http,
                stop.clone(),
            );
            servers.spawn(async move {
                serving.await;
                Ok(())
            });
        }
        if let Some((sockets, state)) = self.udp {
            servers.spawn(beast_api::udp::serve(state, sockets, stop.clone()));
        }
        if let Some((socket, state)) = self.report_udp {
            servers.spawn(beast_api::report::udp::serve(state, socket, stop.clone()));
        }
        let mut first_error = None;
        let drained = async {
            while let Some(done) = servers.join_next().await {
                let result = done
                    .map_err(anyhow::Error::from)
                    .and_then(|r| r.map_err(anyhow::Error::from));
                if let Err(e) = result {
                    tracing::error!(error = %e, "listener failed, shutting down");
                    stop.cancel();
                    first_error.get_or_insert(e);
                }
            }
        };
        let overdue = async {
            stop.cancelled().await;
            tokio::time::sleep(DRAIN_LIMIT).await;
        };
        tokio::select! {
            () = drained => tracing::info!("listeners drained; stopping feeds"),
            () = overdue => tracing::warn!(
                limit_s = DRAIN_LIMIT.as_secs(),
                "requests still in flight (a slow export reader?); no longer waiting for them"
            ),
        }
        // The listeners' own tasks; a connection or an export runs in a task of its own and
        // ends with the process.
        servers.abort_all();
        self.background.cancel();
        self.tracker.close();
        if tokio::time::timeout(Duration::from_secs(10), self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks did not stop within 10 s");
        }
        self.usage_stop.cancel();
        // The writer logs how many events it wrote; counting every usage row here instead
        // would read the whole table, which on a large store takes minutes.
        self.usage_writer.await.context("usage writer")?;
        self.store.close().await;
        tracing::info!("stopped");
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parameters_below_their_minimum_fall_back_to_the_default() {
        let params = Params::from_rows(&rows(&[
            ("rollup_delay_ms", "0"),
            ("usage_batch_size", "0"),
            ("usage_flush_ms", "fast"),
            ("governor_max_in_flight", "7"),
            ("usage_channel_capacity", "99"),
            ("udp_max_answer_bytes", "507"),
        ]));
        assert_eq!(params.reports.rollup_delay_ms, 0, "0 is a valid delay");
        assert_eq!(params.usage.batch_size, 10_000, "0 rows a batch is not");
        assert_eq!(params.usage.flush_interval, Duration::from_millis(100));
        assert_eq!(params.governor_max_in_flight, 7);
        assert_eq!(
            params.usage.capacity, 200_000,
            "a request takes room for up to 100 rows at once"
        );
        assert_eq!(params.udp_max_answer, 65_507, "below one small datagram");
        let defaults = Params::from_rows(&[]);
        assert_eq!(defaults.reports.rollup_delay_ms, 600_000);
        let most = Params::from_rows(&rows(&[("udp_max_answer_bytes", "70000")]));
        assert_eq!(most.udp_max_answer, 65_507, "no datagram carries more");
    }
}
