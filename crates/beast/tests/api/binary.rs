//! The real `beast` binary, driven as a user would: `keys create`, `serve --simulate` on
//! loopback port 0 (bound addresses read from its JSON logs), traffic, SIGTERM.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{beast_ok, beast_text, bin, seventh_definition, usage_rows};

struct Node {
    child: Child,
    listeners: HashMap<String, SocketAddr>,
}

impl Node {
    /// Starts `beast serve` and waits until it has logged `expected` listeners.
    fn start(cwd: &Path, args: &[&str], env: &[(&str, &str)], expected: usize) -> Node {
        let mut cmd = bin();
        cmd.current_dir(cwd)
            .args(args)
            .args(["--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let rx = lines_of(child.stderr.take().unwrap());
        let mut listeners = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while listeners.len() < expected {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("node did not start");
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["message"] == "listening" {
                let addr = v["addr"].as_str().unwrap().parse().unwrap();
                listeners.insert(v["listener"].as_str().unwrap().to_owned(), addr);
            }
        }
        // A listener left on its default (all interfaces, a fixed port) could share the port
        // with a node the developer runs.
        assert!(
            listeners
                .values()
                .all(|addr: &SocketAddr| addr.ip().is_loopback()),
            "every listener on loopback: {listeners:?}"
        );
        Node { child, listeners }
    }

    /// SIGTERM, then the exit status within 20 s.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        exit_within(
            &mut self.child,
            Duration::from_secs(20),
            "node did not exit after SIGTERM",
        )
    }
}

/// `beast generate-usage --rows ROWS --keys KEYS` with its stdout reader gone: it succeeds.
fn generate_with_reader_gone(dir: &std::path::Path, rows: u32, keys: u32) {
    let (rows, keys) = (rows.to_string(), keys.to_string());
    let out = with_reader_gone(
        dir,
        &["generate-usage", "--rows", &rows, "--keys", &keys],
        Gone::Stdout,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The exit status of `child` once it exits; killed, then a panic saying `why`, after
/// `within`.
fn exit_within(child: &mut Child, within: Duration, why: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{why}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

async fn get(client: &reqwest::Client, url: String, key: &str) -> (StatusCode, Value) {
    let r = client
        .get(url)
        .header("X-API-Key", key)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn the_binary_serves_keyed_prices_and_flushes_every_request_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (stdout, _) = beast_ok(&data, &["keys", "create", "--tier", "pro", "--name", "e2e"]).await;
    let key = stdout.lines().last().unwrap().trim().to_owned();
    let id = stdout
        .strip_prefix("created key ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no key id in {stdout}"))
        .to_owned();
    assert!(
        key.starts_with("tb_") && key.len() == 67,
        "last line is the key: {stdout}"
    );

    let data_arg = data.to_str().unwrap();
    let local = "127.0.0.1:0";
    let node = Node::start(
        dir.path(),
        &[
            "--data-dir",
            data_arg,
            "serve",
            "--simulate",
            "--price-http",
            local,
            "--price-health",
            local,
            "--report-http",
            local,
            "--report-health",
            local,
            "--price-udp",
            local,
            "--report-udp",
            local,
        ],
        &[],
        7, // six listeners and the simulator
    );
    let price = node.listeners["price-http"];
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut fresh = false;
    while started.elapsed() < Duration::from_secs(10) && !fresh {
        fresh = get(&client, format!("http://{price}/price?asset=SOL"), &key)
            .await
            .0
            == StatusCode::OK;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fresh, "SOL not fresh within 10 s");
    let served: Vec<StatusCode> = stream::iter(0..1000)
        .map(|_| get(&client, format!("http://{price}/price?asset=BTC"), &key))
        .buffer_unordered(8)
        .map(|(s, _)| s)
        .collect()
        .await;
    assert!(served.iter().all(|s| *s == StatusCode::OK));

    let status = node.terminate();
    assert!(status.success(), "exit status {status}");
    let warm_up = usage_rows(&data, "WHERE asset = 'SOL'").await;
    assert_eq!(usage_rows(&data, "").await - warm_up, 1000);
    assert_eq!(
        usage_rows(&data, "WHERE asset = 'BTC' AND status = 200").await,
        1000
    );

    let (listed, _) = beast_ok(&data, &["keys", "list"]).await;
    // id, prefix, tier, name, month, requests, status: 1001 requests on the e2e key.
    let row: Vec<&str> = listed
        .lines()
        .find(|l| l.split_whitespace().nth(3) == Some("e2e"))
        .unwrap_or_else(|| panic!("no e2e key in {listed}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        (row[2], row[5], row[6]),
        ("pro", "1001", "active"),
        "{listed}"
    );
    assert!(!listed.contains(&key), "keys list never shows the key");
    let (revoked, _) = beast_ok(&data, &["keys", "revoke", &id]).await;
    assert_eq!(revoked.trim(), format!("revoked key {id}"));
    let (listed, _) = beast_ok(&data, &["keys", "list"]).await;
    assert!(
        listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(id.as_str()) && l.ends_with("revoked")),
        "{listed}"
    );
    let (_, stderr, ok) = beast_text(&data, &["keys", "revoke", &id], None).await;
    assert!(!ok && stderr.contains("no active key"), "{stderr}");
    let (_, stderr, ok) = beast_text(&data, &["keys", "create", "--tier", "gold"], None).await;
    assert!(!ok && stderr.contains("unknown tier \"gold\""), "{stderr}");
}

#[tokio::test]
async fn roles_and_addresses_come_from_file_environment_and_flags_in_that_order() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(
        dir.path().join("beast.toml"),
        format!(
            "data_dir = {:?}\nnode_id = \"from-file\"\nreport_http = \"127.0.0.1:0\"\nreport_health = \"127.0.0.1:0\"\nreport_udp = \"127.0.0.1:0\"\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let client = reqwest::Client::new();
    let health = |addr: SocketAddr| {
        let client = client.clone();
        async move {
            client
                .get(format!("http://{addr}/health"))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };

    // SERVER_TYPE picks the report role only; the file gives addresses and the node name.
    let node = Node::start(
        dir.path(),
        &["serve"],
        &[("SERVER_TYPE", "REPORT_SERVER")],
        3,
    );
    assert_eq!(
        node.listeners
            .keys()
            .filter(|k| k.starts_with("price"))
            .count(),
        0
    );
    let h = health(node.listeners["report-health"]).await;
    assert_eq!(
        (h["node"].as_str(), h["roles"].clone()),
        (Some("from-file"), serde_json::json!(["report"]))
    );
    // Every address from the file, not the defaults (:9090, :9091, :2680 on all interfaces).
    for name in ["report-http", "report-health", "report-udp"] {
        let addr = node.listeners[name];
        assert!(
            addr.ip().is_loopback() && ![9090, 9091, 2680].contains(&addr.port()),
            "{name} on {addr}"
        );
    }
    assert!(node.terminate().success());

    // The environment beats the file; a flag beats the environment.
    let node = Node::start(
        dir.path(),
        &["serve"],
        &[
            ("SERVER_TYPE", "REPORT_SERVER"),
            ("BEAST_NODE_ID", "from-env"),
        ],
        3,
    );
    assert_eq!(
        health(node.listeners["report-http"]).await["node"],
        "from-env"
    );
    assert!(node.terminate().success());
    let node = Node::start(
        dir.path(),
        &["serve", "--node-id", "from-flag", "--roles", "report"],
        &[("BEAST_NODE_ID", "from-env"), ("SERVER_TYPE", "APP_SERVER")],
        3,
    );
    assert_eq!(
        health(node.listeners["report-http"]).await["node"],
        "from-flag"
    );
    assert!(node.terminate().success());
    assert!(
        data.join("beast.sqlite3").exists(),
        "the file's data_dir was used"
    );
}

/// SIGTERM sent the moment the listeners are announced stops the node gracefully (exit 0):
/// the signal is caught before any listener is bound, so the default action never kills it.
#[tokio::test]
async fn a_sigterm_sent_as_soon_as_the_listeners_are_announced_is_a_graceful_stop() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("beast.toml"),
        "report_http = \"127.0.0.1:0\"\nreport_health = \"127.0.0.1:0\"\nreport_udp = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    // Before the fix, about half of these starts were killed by the signal: with 15 starts
    // (about 0.07 s each) it goes unseen once in 33,000 runs, where 5 starts missed it once in 32.
    for start in 0..15 {
        let node = Node::start(dir.path(), &["serve", "--roles", "report"], &[], 3);
        let status = node.terminate();
        assert!(status.success(), "start {start}: {status}");
    }
}

/// SIGTERM while the node starts ends the start with exit 0. Here the start waits for the
/// store, whose write lock another connection holds (the node would wait its 10 s busy
/// timeout, then fail); the signal is sent once the node catches it (`SigCgt`).
#[tokio::test]
async fn a_sigterm_while_the_node_starts_ends_it_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    beast_ok(&data, &["keys", "create", "--tier", "free"]).await;
    let url = format!("sqlite://{}", data.join("beast.sqlite3").display());
    let mut holder = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut holder)
        .await
        .unwrap();

    let mut child = bin()
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--roles", "report", "--report-http", "127.0.0.1:0"])
        .args([
            "--report-health",
            "127.0.0.1:0",
            "--report-udp",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = child.stderr.take().unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let catches_sigterm = || {
        std::fs::read_to_string(&status_file)
            .ok()
            .and_then(|s| {
                let mask = s.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
                u64::from_str_radix(mask.trim(), 16).ok()
            })
            .is_some_and(|mask| mask & (1 << (15 - 1)) != 0)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !catches_sigterm() {
        assert!(Instant::now() < deadline, "the node never caught SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Let the start reach the store (it cannot get past it).
    std::thread::sleep(Duration::from_millis(300));
    let node = Node {
        child,
        listeners: HashMap::new(),
    };
    let status = node.terminate();
    let mut logged = String::new();
    log.read_to_string(&mut logged).unwrap();
    assert!(status.success(), "{status}: {logged}");
    // Stopped by its handler while starting: it never got as far as listening.
    assert!(
        logged.contains("shutdown requested") && !logged.contains("listening"),
        "{logged}"
    );
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
}

/// `BEAST_ADMIN_KEY`, when set, is the admin key (trimmed): the key file's is not taken.
#[tokio::test]
async fn the_admin_key_comes_from_the_environment_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("admin.key"), "file-admin-key\n").unwrap();
    let local = "127.0.0.1:0";
    let node = Node::start(
        dir.path(),
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "serve",
            "--simulate",
            "--roles",
            "price",
            "--price-http",
            local,
            "--price-health",
            local,
            "--price-udp",
            local,
        ],
        &[("BEAST_ADMIN_KEY", " env-admin-key ")],
        4, // three listeners and the simulator
    );
    let client = reqwest::Client::new();
    let stats = |key: &'static str| {
        client
            .get(format!(
                "http://{}/admin/stress-stats",
                node.listeners["price-http"]
            ))
            .bearer_auth(key)
            .send()
    };
    assert_eq!(
        stats("env-admin-key").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        stats("file-admin-key").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert!(node.terminate().success());
}

#[tokio::test]
async fn exchanges_parse_prints_every_recorded_trade_field_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for name in ["coinbase", "gemini", "kraken", "gateio", "cryptocom", "okx"] {
        let path = format!(
            "{}/../feeds/tests/fixtures/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        // All frames of the exchange in one run, one per line, as an operator would paste them.
        let cases = fixture["cases"].as_array().unwrap();
        let input: String = cases
            .iter()
            .map(|c| format!("{}\n", c["frame"].as_str().unwrap().replace('\n', " ")))
            .collect();
        let expected: String = cases
            .iter()
            .filter(|c| c["kind"] == "trades")
            .flat_map(|c| c["trades"].as_array().unwrap().clone())
            .map(|t| {
                let text = |v: &Value| v.as_str().map(str::to_owned).unwrap_or_default();
                let time = t[3].as_i64().map(|ms| ms.to_string()).unwrap_or_default();
                format!(
                    "{}\t{}\t{}\t{time}\n",
                    text(&t[0]),
                    text(&t[1]),
                    text(&t[2])
                )
            })
            .collect();
        let (stdout, stderr, ok) = beast_text(
            &dir.path().join("data"),
            &["exchanges", "parse", "--exchange", name],
            Some(&input),
        )
        .await;
        assert!(ok, "{name}: {stderr}");
        assert_eq!(stdout, expected, "{name}");
        let errors = cases
            .iter()
            .filter(|c| matches!(c["kind"].as_str(), Some("malformed" | "refused")))
            .count();
        assert_eq!(
            stderr.lines().count(),
            errors,
            "{name}: one stderr line per bad frame: {stderr}"
        );
        checked += cases.len();
    }
    // Every recorded frame of the six exchanges went through the binary.
    assert_eq!(checked, 27);
}

#[tokio::test]
async fn exchanges_parse_tries_an_unsaved_definition_and_the_cli_saves_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let definition = seventh_definition("ws://127.0.0.1:1/stream");
    let file = dir.path().join("seventh.json");
    std::fs::write(&file, definition.to_string()).unwrap();
    let frames = concat!(
        r#"{"kind":"fills","market":"FOOEUR","fills":[{"rate":"12.50","qty":"3","at":"2026-11-21T10:00:00.123Z"},{"rate":"12.51","qty":"0.1","at":"2026-11-21T10:00:01Z"}]}"#,
        "\n",
        r#"{"kind":"welcome"}"#,
        "\n",
        r#"{"kind":"fills","market":"FOOEUR","fills":[{"rate":"-1","qty":"3","at":"2026-11-21T10:00:00Z"}]}"#,
        "\n",
    );
    let (stdout, stderr, ok) = beast_text(
        &data,
        &["exchanges", "parse", "--definition", file.to_str().unwrap()],
        Some(frames),
    )
    .await;
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout,
        "FOOEUR\t12.50\t3\t1795255200123\nFOOEUR\t12.51\t0.1\t1795255201000\n"
    );
    assert!(
        stderr.starts_with("line 3:") && stderr.contains("price_path"),
        "{stderr}"
    );

    // Saved, mapped and toggled from the command line, with the same checks as the admin API.
    let save = ["exchanges", "save", "--definition", file.to_str().unwrap()];
    beast_ok(&data, &save).await;
    let mut bad = definition.clone();
    bad["time_format"] = "unix_weeks".into();
    std::fs::write(&file, bad.to_string()).unwrap();
    let (_, stderr, ok) = beast_text(&data, &save, None).await;
    assert!(!ok && stderr.contains("time_format"), "{stderr}");
    let rows = dir.path().join("rows.json");
    std::fs::write(
        &rows,
        r#"[{"exchange":"seventh","asset":"foo","symbol":"FOOEUR","quote":"EUR","prewarm":true}]"#,
    )
    .unwrap();
    beast_ok(
        &data,
        &["exchanges", "assets-save", "--file", rows.to_str().unwrap()],
    )
    .await;
    let (toggled, _) = beast_ok(
        &data,
        &["exchanges", "toggle", "seventh", "--enabled", "false"],
    )
    .await;
    assert_eq!(toggled.trim(), "seventh enabled=false");
    let (listing, _) = beast_ok(&data, &["exchanges", "assets", "--exchange", "seventh"]).await;
    // exchange, asset (normalized from "foo"), symbol, quote, enabled, prewarm.
    let row: Vec<&str> = listing
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("no mapping in {listing}"))
        .split_whitespace()
        .take(6)
        .collect();
    assert_eq!(
        row,
        ["seventh", "FOO", "FOOEUR", "EUR", "true", "true"],
        "{listing}"
    );
}

#[tokio::test]
async fn faults_are_injected_from_the_command_line() {
    let mut sim = Sim(bin()
        .args(["simulate", "--bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let first = lines_of(sim.0.stdout.take().unwrap())
        .recv_timeout(Duration::from_secs(30))
        .expect("the simulator printed its address within 30 s");
    let addr = first.trim().rsplit(' ').next().unwrap().to_owned();
    let url = format!("http://{addr}");
    let ticker = format!("{url}/okx/api/v5/market/ticker?instId=BTC-USDT");
    let client = reqwest::Client::new();
    assert_eq!(
        client.get(&ticker).send().await.unwrap().status(),
        StatusCode::OK
    );
    let fault = |kind: &str| {
        bin()
            .args([
                "simulate",
                "fault",
                "--url",
                &url,
                "--exchange",
                "okx",
                "--kind",
                kind,
            ])
            .output()
            .unwrap()
    };
    let out = fault("failing_rest");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("failing_rest"));
    assert_eq!(
        client.get(&ticker).send().await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(fault("clear").status.success());
    assert_eq!(
        client.get(&ticker).send().await.unwrap().status(),
        StatusCode::OK
    );
    let out = fault("melt_down");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("melt_down"));
}

/// Which output stream of a command is a pipe whose reader has already gone.
#[derive(Clone, Copy)]
enum Gone {
    Stdout,
    Stderr,
}

/// Runs `beast --data-dir DIR ARGS` with `gone` a pipe whose reader has already gone, the
/// other stream captured; fails the test if the command is still running after 30 s (waiting
/// for room in a pipe nobody reads).
fn with_reader_gone(dir: &Path, args: &[&str], gone: Gone) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = bin();
    cmd.arg("--data-dir").arg(dir).args(args);
    match gone {
        Gone::Stdout => cmd.stdout(writer).stderr(Stdio::piped()),
        Gone::Stderr => cmd.stdout(Stdio::piped()).stderr(writer),
    };
    let mut child = cmd.spawn().unwrap();
    let mut other: Box<dyn std::io::Read + Send> = match gone {
        Gone::Stdout => Box::new(child.stderr.take().unwrap()),
        Gone::Stderr => Box::new(child.stdout.take().unwrap()),
    };
    let captured = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = other.read_to_end(&mut bytes);
        bytes
    });
    let status = exit_within(
        &mut child,
        Duration::from_secs(30),
        &format!("beast {args:?} still runs after 30 s with its reader gone"),
    );
    let captured = captured.join().unwrap();
    let (stdout, stderr) = match gone {
        Gone::Stdout => (Vec::new(), captured),
        Gone::Stderr => (captured, Vec::new()),
    };
    std::process::Output {
        status,
        stdout,
        stderr,
    }
}

#[tokio::test]
async fn a_reader_that_leaves_early_ends_a_command_quietly_but_never_cuts_its_work_short() {
    let dir = tempfile::tempdir().unwrap();
    // `beast exchanges list | head -0`: nothing is lost, so the command ends quietly.
    let out = with_reader_gone(dir.path(), &["exchanges", "list"], Gone::Stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "status {}: {stderr}", out.status);
    assert!(stderr.is_empty(), "quietly: {stderr}");

    // Generated usage is written whole before the keys are printed.
    generate_with_reader_gone(dir.path(), 250, 2);
    assert_eq!(usage_rows(dir.path(), "").await, 250);

    // A key nobody saw is a failure that says how to get rid of it.
    let out = with_reader_gone(
        dir.path(),
        &["keys", "create", "--tier", "pro"],
        Gone::Stdout,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("key 3 was created but could not be shown")
            && stderr.contains("beast keys revoke 3"),
        "{stderr}"
    );

    // An export whose reader left ends too, however many chunks it still had to send.
    generate_with_reader_gone(dir.path(), 20_000, 1);
    assert_eq!(usage_rows(dir.path(), "").await, 20_250, "rows to export");
    let out = with_reader_gone(
        dir.path(),
        &["report", "usage", "--page-size", "all"],
        Gone::Stdout,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "status {}: {stderr}",
        out.status
    );
}

#[tokio::test]
async fn with_standard_error_gone_commands_still_work_and_a_failure_still_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| with_reader_gone(dir.path(), args, Gone::Stderr).status;
    // generate-usage tells standard error what it wrote, to nobody.
    let status = run(&["generate-usage", "--rows", "120", "--keys", "1"]);
    assert!(status.success(), "{status}");
    assert_eq!(usage_rows(dir.path(), "").await, 120);
    // A failure is exit code 1, not a panic's 101.
    assert_eq!(run(&["keys", "revoke", "999"]).code(), Some(1));
}

/// A child's output (its piped stderr or stdout), line by line, read on a thread of its own so
/// a test can wait for a line with a deadline (echoed when `TEST_LOG` is set).
fn lines_of(output: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            if std::env::var_os("TEST_LOG").is_some() {
                eprintln!("{line}");
            }
            let _ = tx.send(line);
        }
    });
    rx
}

/// A `beast simulate` child, killed when dropped, so a failed assertion leaves none behind.
struct Sim(Child);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_simulator_runs_on_when_its_listing_finds_no_reader() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut sim = Sim(bin()
        .args(["simulate", "--bind", "127.0.0.1:0"])
        .env("RUST_LOG", "debug")
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap());
    let lines = lines_of(sim.0.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut addr = None;
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the simulator logged that its stdout closed and it runs on");
        if let Some(at) = line.split("addr=").nth(1) {
            addr = Some(at.trim().to_owned());
        }
        if line.contains("stdout closed; the simulator runs on") {
            break;
        }
    }
    let addr = addr.expect("the simulator logged its address");
    assert!(sim.0.try_wait().unwrap().is_none(), "the simulator stopped");
    std::net::TcpStream::connect(&addr).expect("the simulator still accepts");
}
