//! `spawn_app()`: a node on loopback port 0 with a temp data dir and the simulator.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use beast::{app::Application, config::Settings};
use beast_store::{SqliteStore, keys};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub price: SocketAddr,
    pub health: SocketAddr,
    pub udp: SocketAddr,
    /// The report listener (HTTP) and its UDP listener.
    pub report: SocketAddr,
    pub report_udp: SocketAddr,
    /// The in-process exchange simulator (faults are injected here).
    pub simulator: SocketAddr,
    pub admin_key: String,
    pub data_dir: tempfile::TempDir,
    pub client: reqwest::Client,
    stop: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Logs stay silent unless `TEST_LOG` is set.
pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = beast::telemetry::init("text");
    }
}

/// The code of an error answer that refuses a request (`{"error":{"code":..}}`, the code
/// not empty), and not a server fault (`internal_error`); `None` for any other answer.
pub fn refusal_code(answer: &Value) -> Option<&str> {
    answer["error"]["code"]
        .as_str()
        .filter(|code| !code.is_empty() && *code != "internal_error")
}

/// Runs SQL on a data dir's database (to set up what no command does yet).
pub async fn sql(data_dir: &Path, statements: &[&str]) {
    let url = format!("sqlite://{}", data_dir.join("beast.sqlite3").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    for s in statements {
        sqlx::query(sqlx::AssertSqlSafe(*s))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
}

/// The one column a query selects, every row, from a data dir's database.
pub async fn column<T>(data_dir: &Path, query: &str) -> Vec<T>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + Send + Unpin,
{
    let url = format!("sqlite://{}", data_dir.join("beast.sqlite3").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let values = sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_owned()))
        .fetch_all(&pool)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    pool.close().await;
    values
}

/// The one value a query selects.
pub async fn scalar<T>(data_dir: &Path, query: &str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + Send + Unpin,
{
    let mut values = column(data_dir, query).await;
    assert_eq!(values.len(), 1, "{query}: one row expected");
    values.remove(0)
}

pub async fn usage_rows(data_dir: &Path, filter: &str) -> i64 {
    scalar(
        data_dir,
        &format!("SELECT COUNT(*) FROM usage_logs {filter}"),
    )
    .await
}

/// The `beast` binary as a command that sees none of the caller's settings: every `BEAST_*`
/// variable, `SERVER_TYPE` and `RUST_LOG` (a `warn` level would hide the `listening` lines the
/// tests read) are removed, and it runs in cargo's scratch directory for tests, not the
/// crate's, where a stray `beast.toml` would be read. So a developer's shell cannot change
/// what a test runs.
pub fn bin() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_beast"));
    cmd.current_dir(env!("CARGO_TARGET_TMPDIR"));
    for (name, _) in std::env::vars_os() {
        if name == "SERVER_TYPE"
            || name == "RUST_LOG"
            || name.to_str().is_some_and(|n| n.starts_with("BEAST_"))
        {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Runs the `beast` binary ([`bin`]) on a data dir, with `stdin` piped in if given.
pub async fn beast(data_dir: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::from(bin())
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    child.wait_with_output().await.unwrap()
}

/// Maps `QQQ`, an asset only OKX lists and not prewarmed: it is fetched on demand from OKX's
/// REST ticker.
const ON_DEMAND_OKX_ASSET: &str = "INSERT INTO exchange_asset_map (exchange, asset, symbol, quote, enabled, prewarm, category) \
     VALUES ('okx', 'QQQ', 'QQQ-USDT', 'USDT', 1, 0, 'on-demand')";

/// A node with these `parameters` ([`spawn_app_with_parameters`]) where `QQQ` is fetched on
/// demand from OKX's REST ticker ([`ON_DEMAND_OKX_ASSET`]).
pub async fn spawn_app_with_on_demand_okx(parameters: &[(&str, &str)]) -> TestApp {
    spawn_app_with_parameters_and(parameters, &[ON_DEMAND_OKX_ASSET]).await
}

/// Maps `ADA` on Kraken only, not prewarmed.
pub const KRAKEN_ONLY_ASSET: &str = "INSERT INTO exchange_asset_map (exchange, asset, symbol, quote, enabled, prewarm, category) \
     VALUES ('kraken', 'ADA', 'ADA/USD', 'USD', 1, 0, 'on-demand')";

/// Runs `beast` and asserts it succeeds; its stdout and stderr.
pub async fn beast_ok(data_dir: &Path, args: &[&str]) -> (String, String) {
    let (stdout, stderr, ok) = beast_text(data_dir, args, None).await;
    assert!(ok, "beast {args:?}: {stderr}");
    (stdout, stderr)
}

/// Runs `beast` (with `stdin` piped in, if any); returns (stdout, stderr, success).
pub async fn beast_text(
    data_dir: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> (String, String, bool) {
    let out = beast(data_dir, args, stdin).await;
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        out.status.success(),
    )
}

/// Sends one datagram to `to` and reads the JSON answer; `None` if none comes in time.
pub async fn ask_udp(
    socket: &tokio::net::UdpSocket,
    to: SocketAddr,
    request: &[u8],
    within: Duration,
) -> Option<Value> {
    socket.send_to(request, to).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    let (len, _) = tokio::time::timeout(within, socket.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    Some(serde_json::from_slice(&buf[..len]).unwrap())
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| async {}).await
}

/// Spawns a node whose application parameters `(name, value)` are set first.
pub async fn spawn_app_with_parameters(parameters: &[(&str, &str)]) -> TestApp {
    spawn_app_with_parameters_and(parameters, &[]).await
}

/// [`spawn_app_with_parameters`], with the `more` statements run on its store too.
async fn spawn_app_with_parameters_and(parameters: &[(&str, &str)], more: &[&str]) -> TestApp {
    let statements: Vec<String> = parameters
        .iter()
        .map(|(name, value)| {
            format!("UPDATE application_parameters SET value = '{value}' WHERE name = '{name}'")
        })
        .chain(more.iter().map(|s| (*s).to_owned()))
        .collect();
    let names: Vec<String> = parameters.iter().map(|(n, _)| format!("'{n}'")).collect();
    spawn_app_with(|dir| async move {
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        sql(&dir, &statements).await;
        // A misspelt name would change no row and leave the default in place.
        let known = format!(
            "SELECT COUNT(*) FROM application_parameters WHERE name IN ({})",
            names.join(",")
        );
        let found: i64 = scalar(&dir, &known).await;
        assert_eq!(
            found as usize,
            names.len(),
            "unknown parameters in {names:?}"
        );
    })
    .await
}

/// Spawns a node after `prepare` has run on its (already seeded) data dir.
pub async fn spawn_app_with<F, Fut>(prepare: F) -> TestApp
where
    F: FnOnce(std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    spawn_app_with_settings(prepare, |_| {}).await
}

/// Spawns a node after `prepare` has run on its (already seeded) data dir, with the test
/// settings (every listener on 127.0.0.1, port 0) as `adjust` leaves them.
pub async fn spawn_app_with_settings<F, Fut>(
    prepare: F,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp
where
    F: FnOnce(std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    init_logs();
    let data_dir = tempfile::tempdir().unwrap();
    SqliteStore::open(data_dir.path())
        .await
        .unwrap()
        .close()
        .await;
    prepare(data_dir.path().to_owned()).await;
    let local = "127.0.0.1:0".parse().unwrap();
    let mut settings = Settings {
        data_dir: data_dir.path().to_owned(),
        price_http: local,
        price_health: local,
        price_udp: local,
        report_http: local,
        report_health: local,
        report_udp: local,
        webhook_health: local,
        node_id: "test-node".into(),
        simulate: true,
        ..Settings::default()
    };
    adjust(&mut settings);
    let app = Application::build(settings).await.unwrap();
    let price = app.address("price-http").unwrap();
    let health = app.address("price-health").unwrap();
    let simulator = app.address("simulator").unwrap();
    let udp = app.address("price-udp").unwrap();
    let report = app.address("report-http").unwrap();
    let report_udp = app.address("report-udp").unwrap();
    let admin_key = std::fs::read_to_string(data_dir.path().join("admin.key"))
        .unwrap()
        .trim()
        .to_owned();
    let stop = CancellationToken::new();
    let handle = tokio::spawn(app.run_until_stopped(stop.clone()));
    TestApp {
        price,
        health,
        udp,
        report,
        report_udp,
        simulator,
        admin_key,
        data_dir,
        client: reqwest::Client::new(),
        stop,
        handle: Some(handle),
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl TestApp {
    /// `/health` on the node's health listener, which has no per-address limit for a waiting
    /// loop to run into.
    pub async fn health(&self) -> Value {
        self.get_at(self.health, "/health", None).await.body
    }

    /// Active keys as the running node reports them.
    pub async fn active_keys(&self) -> i64 {
        self.health().await["keys"].as_i64().unwrap()
    }

    /// Waits until the node reports `n` active keys.
    pub async fn wait_active_keys(&self, n: i64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.active_keys().await != n {
            assert!(
                Instant::now() < deadline,
                "node did not reach {n} active keys within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Creates a key in the store (as `beast keys create` does) and waits until the running
    /// node accepts it. Returns the raw key and its id.
    pub async fn key_with_id(&self, tier: &str) -> (String, i64) {
        let before = self.active_keys().await;
        let store = SqliteStore::open(self.data_dir.path()).await.unwrap();
        let (key, record) = keys::create(&store, "test", tier).await.unwrap();
        store.close().await;
        self.wait_active_keys(before + 1, Duration::from_secs(5))
            .await;
        (key, record.id)
    }

    pub async fn key(&self, tier: &str) -> String {
        self.key_with_id(tier).await.0
    }

    pub async fn get(&self, path_and_query: &str, key: Option<&str>) -> Reply {
        self.get_at(self.price, path_and_query, key).await
    }

    pub async fn get_at(&self, addr: SocketAddr, path_and_query: &str, key: Option<&str>) -> Reply {
        let (status, headers, text) = self.get_text(addr, path_and_query, key).await;
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path_and_query}: body is not JSON ({e}): {text}"));
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A GET whose body is read as text (CSV, TSV, plain text or JSON).
    pub async fn get_text(
        &self,
        addr: SocketAddr,
        path_and_query: &str,
        key: Option<&str>,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut req = self.client.get(format!("http://{addr}{path_and_query}"));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        (status, headers, resp.text().await.unwrap())
    }

    /// `/admin/stress-stats`, answered 200.
    pub async fn stress_stats(&self) -> Value {
        let r = self.admin("/admin/stress-stats", None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body
    }

    /// An admin API call: GET without a body, POST with one.
    pub async fn admin(&self, path: &str, body: Option<Value>) -> Reply {
        let url = format!("http://{}{path}", self.price);
        let req = match body {
            None => self.client.get(url),
            Some(b) => self.client.post(url).json(&b),
        };
        reply(req.bearer_auth(&self.admin_key), path).await
    }

    /// The stored definition of an exchange, as `/admin/exchange-feeds` lists it, without its
    /// live status: ready to be changed and saved back.
    pub async fn stored_definition(&self, name: &str) -> Value {
        let r = self.admin("/admin/exchange-feeds", None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let mut row = r.body["exchange_feeds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["name"] == name)
            .unwrap_or_else(|| panic!("no exchange {name}: {}", r.body))
            .clone();
        row.as_object_mut().unwrap().remove("status");
        row
    }

    /// Injects a fault into the simulator; panics if it refuses.
    pub async fn fault(&self, request: Value) {
        let url = format!("http://{}/_faults", self.simulator);
        let r = reply(self.client.post(url).json(&request), "/_faults").await;
        assert_eq!(r.status, StatusCode::OK, "{request}: {}", r.body);
    }

    /// The live status of one exchange, from `/admin/feed-status` (None when not running).
    pub async fn feed(&self, name: &str) -> Option<Value> {
        let r = self.admin("/admin/feed-status", None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["status"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .cloned()
    }

    /// Waits until `query` (one `COUNT(*)` on the store) reads `n`; panics after 5 s. For
    /// rows written a moment after the answers (usage batches, report log rows).
    pub async fn wait_count(&self, query: &str, n: i64) {
        self.eventually(
            &format!("{query} = {n}"),
            Duration::from_secs(5),
            || async { (scalar::<i64>(self.data_dir.path(), query).await == n).then_some(()) },
        )
        .await;
    }

    /// Polls `check` every 50 ms until it gives a value, or panics after `within`.
    pub async fn eventually<T, F, Fut>(&self, what: &str, within: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: not within {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `asset` pinned to `source` answers 200, or panics after 15 s.
    pub async fn wait_priced_by(&self, asset: &str, source: &str, key: &str) {
        let path = format!("/price?asset={asset}&source={source}");
        self.wait_ok(&path, key, Duration::from_secs(15)).await;
    }

    /// A key of `tier`, once BTC has a price to answer it with (a test that asks BTC at once
    /// would otherwise depend on the first on-demand fetch).
    pub async fn priced_key(&self, tier: &str) -> String {
        let key = self.key(tier).await;
        self.wait_fresh("BTC", &key, Duration::from_secs(15)).await;
        key
    }

    /// Waits until `asset` answers 200, and returns that answer; panics after `within`.
    pub async fn wait_fresh(&self, asset: &str, key: &str, within: Duration) -> Reply {
        self.wait_ok(&format!("/price?asset={asset}"), key, within)
            .await
    }

    /// Waits until `path` answers `key` 200, and returns that answer; panics after `within`.
    async fn wait_ok(&self, path: &str, key: &str, within: Duration) -> Reply {
        self.eventually(path, within, || async {
            let r = self.get(path, Some(key)).await;
            (r.status == StatusCode::OK).then_some(r)
        })
        .await
    }

    /// Graceful shutdown, as on SIGTERM; returns once usage is flushed.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
    }
}

/// The seventh exchange of the tests: a protocol none of the built-ins use, with the symbol
/// only in the frame (`^.market`), RFC 3339 times and numeric trade ids.
pub fn seventh_definition(ws_url: &str) -> Value {
    serde_json::json!({
        "name": "seventh",
        "source": "seventh-ws",
        "ws_url": ws_url,
        "subscribe_template": "{\"action\":\"join\",\"markets\":[{SYMBOLS}]}",
        "match": {"$.kind": "fills"},
        "items_path": "$.fills[*]",
        "symbol_path": "^.market",
        "price_path": "$.rate",
        "size_path": "$.qty",
        "time_path": "$.at",
        "trade_id_path": "$.no",
        "time_format": "rfc3339",
        "liveness_timeout_s": 10
    })
}

/// Sends a request and reads its JSON answer.
async fn reply(request: reqwest::RequestBuilder, what: &str) -> Reply {
    let resp = request.send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = resp.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{what}: body is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    Reply {
        status,
        headers,
        body,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
