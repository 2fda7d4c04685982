//! The engine against tiny in-process servers: what the client reports must match what the
//! server saw, request for request.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    routing::get,
};
use tokio::net::UdpSocket;

use super::{
    engine::{self, LevelOutcome, Live, Stop, Tally},
    plan::{Plan, Target},
};
use crate::{cli::StressArgs, config::KeyFlag};

const KEY: &str = "tb_test_key";

fn args(target: &str, levels: &[usize], duration_s: f64, timeout_ms: u64) -> StressArgs {
    StressArgs {
        target: target.to_owned(),
        key: Some(KEY.parse().unwrap()),
        keys_file: None,
        assets: vec!["BTC".to_owned(), "ETH".to_owned()],
        levels: levels.to_vec(),
        duration_s,
        udp_depth: 3,
        timeout_ms,
        path: None,
        json: true,
    }
}

async fn run_all(plan: &Plan, stop: &Stop) -> Vec<LevelOutcome> {
    let mut outcomes = Vec::new();
    for level in 0..plan.levels.len() {
        let outcome = engine::run_level(plan, level, stop, Arc::new(Live::default()))
            .await
            .expect("the level runs");
        outcomes.push(outcome);
    }
    outcomes
}

/// Runs every level of a plan against `target` to its end.
async fn outcomes_of(
    target: &str,
    levels: &[usize],
    duration_s: f64,
    timeout_ms: u64,
) -> Vec<LevelOutcome> {
    let plan = Plan::new(&args(target, levels, duration_s, timeout_ms))
        .await
        .expect("valid plan");
    run_all(&plan, &Stop::default()).await
}

fn total(outcomes: &[LevelOutcome]) -> Tally {
    let mut tally = Tally::default();
    for outcome in outcomes {
        tally.merge(&outcome.tally);
    }
    tally
}

/// What the HTTP test server saw.
#[derive(Default)]
struct Seen {
    requests: AtomicU64,
    limited: AtomicU64,
    unauthorized: AtomicU64,
    assets: Mutex<BTreeSet<String>>,
}

/// A `/price` that answers 200 with fixed JSON, and 429 `rate_limited` to every fifth request.
async fn http_server() -> (SocketAddr, Arc<Seen>) {
    async fn price(
        State(seen): State<Arc<Seen>>,
        headers: HeaderMap,
        Query(query): Query<std::collections::HashMap<String, String>>,
    ) -> (StatusCode, &'static str) {
        let n = seen.requests.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(asset) = query.get("asset") {
            seen.assets.lock().expect("test lock").insert(asset.clone());
        }
        let expected = format!("Bearer {KEY}");
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&expected) {
            seen.unauthorized.fetch_add(1, Ordering::SeqCst);
            return (
                StatusCode::UNAUTHORIZED,
                r#"{"error":{"code":"invalid_api_key","message":"no"}}"#,
            );
        }
        if n % 5 == 0 {
            seen.limited.fetch_add(1, Ordering::SeqCst);
            return (
                StatusCode::TOO_MANY_REQUESTS,
                r#"{"error":{"code":"rate_limited","message":"slow down","retry_after_s":1}}"#,
            );
        }
        (
            StatusCode::OK,
            r#"{"asset":"BTC","price":"64000.5","sources_used":3}"#,
        )
    }
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/price", get(price))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("bound address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

#[derive(Clone, Copy)]
enum UdpMode {
    /// A reply to another id first (an error, so taking it would show), then the real one.
    Answer,
    /// `{"id":..,"error":{"code":"stale_price",..}}`.
    Refuse,
    /// Never answers.
    Silent,
    /// Answers, after this long.
    Late(Duration),
}

/// Well-formed requests a UDP test server got: how many per client socket, and their ids.
#[derive(Default)]
struct Peers {
    per_socket: Mutex<HashMap<SocketAddr, u64>>,
    ids: Mutex<Vec<String>>,
}

impl Peers {
    fn counts(&self) -> Vec<u64> {
        let mut counts: Vec<u64> = self
            .per_socket
            .lock()
            .expect("test lock")
            .values()
            .copied()
            .collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        counts
    }

    fn total(&self) -> u64 {
        self.counts().iter().sum()
    }
}

/// A UDP price server per the protocol contract; counts the well-formed requests it got.
async fn udp_server(mode: UdpMode) -> (SocketAddr, Arc<Peers>) {
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind loopback"));
    let addr = socket.local_addr().expect("bound address");
    let seen = Arc::new(Peers::default());
    let counter = seen.clone();
    tokio::spawn(async move {
        let mut buf = vec![0; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Ok(request) = serde_json::from_slice::<serde_json::Value>(&buf[..n]) else {
                continue;
            };
            let (Some(id), Some(_asset)) = (request["id"].as_str(), request["asset"].as_str())
            else {
                continue;
            };
            if request["key"] != KEY {
                continue;
            }
            *counter
                .per_socket
                .lock()
                .expect("test lock")
                .entry(from)
                .or_default() += 1;
            counter.ids.lock().expect("test lock").push(id.to_owned());
            let replies = match mode {
                UdpMode::Answer => vec![
                    r#"{"id":"stale-0","error":{"code":"not_yours","message":"m"}}"#.to_owned(),
                    format!(r#"{{"asset":"BTC","price":"64000.5","sources_used":3,"id":"{id}"}}"#),
                ],
                UdpMode::Refuse => vec![format!(
                    r#"{{"id":"{id}","error":{{"code":"stale_price","message":"old","age_ms":9000}}}}"#
                )],
                UdpMode::Silent => vec![],
                UdpMode::Late(after) => {
                    let (socket, reply) =
                        (socket.clone(), format!(r#"{{"price":"1","id":"{id}"}}"#));
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let _ = socket.send_to(reply.as_bytes(), from).await;
                    });
                    vec![]
                }
            };
            for reply in replies {
                let _ = socket.send_to(reply.as_bytes(), from).await;
            }
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_reported_are_the_requests_the_server_answered() {
    let (addr, seen) = http_server().await;
    let outcomes = outcomes_of(&format!("http://{addr}"), &[1, 4], 0.3, 2000).await;

    let tally = total(&outcomes);
    assert!(
        outcomes.iter().all(|o| o.tally.requests > 0),
        "every level sent requests"
    );
    assert_eq!(tally.requests, seen.requests.load(Ordering::SeqCst));
    assert_eq!(
        seen.unauthorized.load(Ordering::SeqCst),
        0,
        "the key is sent"
    );
    let limited = seen.limited.load(Ordering::SeqCst);
    assert!(limited > 0);
    assert_eq!(tally.errors.get("rate_limited"), Some(&limited));
    assert_eq!(tally.errors.len(), 1, "{:?}", tally.errors);
    assert_eq!(
        outcomes.iter().map(|o| o.latency.len()).sum::<u64>(),
        tally.successes,
        "one latency per success"
    );
    let assets = seen.assets.lock().expect("test lock").clone();
    assert_eq!(assets, BTreeSet::from(["BTC".to_owned(), "ETH".to_owned()]));
}

/// Stop signals whose soft stop (a first Ctrl-C) fires `after` from now.
fn ctrl_c_after(after: Duration) -> Stop {
    let stop = Stop::default();
    let trigger = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        trigger.soft.cancel();
    });
    stop
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_ends_a_level_early_and_its_requests_still_add_up() {
    let (addr, seen) = http_server().await;
    let plan = Plan::new(&args(&format!("http://{addr}"), &[4], 30.0, 2000))
        .await
        .expect("valid plan");
    let outcomes = run_all(&plan, &ctrl_c_after(Duration::from_millis(200))).await;

    assert!(outcomes[0].interrupted);
    let report = super::report::Report::new(&plan, &outcomes).expect("report");
    assert!(report.interrupted);
    assert!(
        outcomes[0].elapsed < Duration::from_secs(5),
        "{:?}",
        outcomes[0].elapsed
    );
    assert!(outcomes[0].tally.requests > 0);
    assert_eq!(
        outcomes[0].tally.requests,
        seen.requests.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_replies_are_matched_by_id_and_none_are_lost() {
    let (addr, seen) = udp_server(UdpMode::Answer).await;
    let outcomes = outcomes_of(&format!("udp://{addr}"), &[1, 4], 0.3, 1000).await;

    let tally = total(&outcomes);
    assert!(tally.successes > 0);
    assert!(tally.errors.is_empty(), "{:?}", tally.errors);
    assert_eq!(tally.successes, seen.total());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_request_ids_are_unique_over_the_run() {
    let (addr, seen) = udp_server(UdpMode::Answer).await;
    let outcomes = outcomes_of(&format!("udp://{addr}"), &[1, 1, 4], 0.2, 1000).await;

    let ids = seen.ids.lock().expect("test lock").clone();
    assert_eq!(ids.len() as u64, total(&outcomes).requests);
    let distinct: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(distinct.len(), ids.len(), "an id was sent twice");
    // Each level's workers take ids after the last level's: 0, then 1, then 2 and 3.
    let workers: BTreeSet<&str> = ids.iter().filter_map(|id| id.split('-').next()).collect();
    assert_eq!(workers, BTreeSet::from(["0", "1", "2", "3"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_error_replies_are_counted_by_their_code() {
    let (addr, seen) = udp_server(UdpMode::Refuse).await;
    let tally = total(&outcomes_of(&format!("udp://{addr}"), &[2], 0.2, 1000).await);

    assert!(tally.requests > 0);
    assert_eq!(tally.successes, 0);
    assert_eq!(tally.errors.get("stale_price"), Some(&tally.requests));
    assert_eq!(tally.requests, seen.total());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_while_a_level_waits_for_its_last_answers_leaves_it_whole() {
    let (addr, _) = udp_server(UdpMode::Silent).await;
    let plan = Plan::new(&args(&format!("udp://{addr}"), &[2], 0.3, 1500))
        .await
        .expect("valid plan");
    // After the level's 0.3 s, while its unanswered requests wait out their 1.5 s.
    let outcomes = run_all(&plan, &ctrl_c_after(Duration::from_millis(900))).await;
    assert!(!outcomes[0].interrupted, "its time was up before the stop");
    let report = super::report::Report::new(&plan, &outcomes).expect("report");
    assert!(!report.interrupted, "the run ran whole");
    assert_eq!(outcomes[0].tally.errors.get("timeout"), Some(&2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_requests_with_no_reply_are_timeouts() {
    let (addr, seen) = udp_server(UdpMode::Silent).await;
    let tally = total(&outcomes_of(&format!("udp://{addr}"), &[2], 0.3, 100).await);

    assert!(tally.requests >= 2, "{tally:?}");
    assert_eq!(tally.successes, 0);
    assert_eq!(tally.errors.get("timeout"), Some(&tally.requests));
    assert_eq!(tally.requests, seen.total());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_level_is_split_over_sockets_of_udp_depth_requests_each() {
    let (addr, seen) = udp_server(UdpMode::Silent).await;
    // 8 in flight at depth 3: sockets of 3, 3 and 2. Unanswered, every request stays in
    // flight past the level's end, so each socket sends exactly its share once.
    let tally = total(&outcomes_of(&format!("udp://{addr}"), &[8], 0.5, 2000).await);
    assert_eq!(seen.counts(), [3, 3, 2]);
    assert_eq!(tally.errors.get("timeout"), Some(&8), "{tally:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_cannot_be_sent_is_its_own_error_not_one_in_flight() {
    let (addr, seen) = udp_server(UdpMode::Answer).await;
    // Every other request carries a key too long for a datagram: its send fails (EMSGSIZE)
    // while requests sent before it in the burst are in flight, and they are answered.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), format!("{KEY}\n{}\n", "k".repeat(70_000))).unwrap();
    let plan = Plan::new(&StressArgs {
        keys_file: Some(file.path().to_path_buf()),
        assets: vec!["BTC".to_owned()],
        ..args(&format!("udp://{addr}"), &[3], 0.3, 1000)
    })
    .await
    .expect("valid plan");
    let tally = total(&run_all(&plan, &Stop::default()).await);
    assert!(tally.successes > 0, "{tally:?}");
    assert_eq!(
        tally.successes,
        seen.total(),
        "every request sent was answered"
    );
    assert_eq!(tally.errors.keys().collect::<Vec<_>>(), ["io"], "{tally:?}");
    assert_eq!(tally.requests, tally.successes + tally.errors["io"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waited_out_past_the_level_do_not_stretch_its_time() {
    let (addr, _) = udp_server(UdpMode::Silent).await;
    // Unanswered, the requests are waited out for 2 s after a level of 0.5 s: its rate is
    // over its own time, not over the wait.
    let outcomes = outcomes_of(&format!("udp://{addr}"), &[4], 0.5, 2000).await;
    let level = &outcomes[0];
    assert_eq!(level.tally.errors.get("timeout"), Some(&4));
    assert!(
        (Duration::from_millis(500)..Duration::from_millis(600)).contains(&level.elapsed),
        "{:?}",
        level.elapsed
    );
    // Answered 0.4 s after a level of 0.1 s: its time runs to the last answer.
    let (addr, _) = udp_server(UdpMode::Late(Duration::from_millis(400))).await;
    let outcomes = outcomes_of(&format!("udp://{addr}"), &[4], 0.1, 2000).await;
    let level = &outcomes[0];
    assert_eq!((level.tally.requests, level.tally.successes), (4, 4));
    assert!(
        (Duration::from_millis(400)..Duration::from_millis(1000)).contains(&level.elapsed),
        "{:?}",
        level.elapsed
    );
}

#[tokio::test]
async fn bad_command_lines_are_clear_errors() {
    let blank = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(blank.path(), "\n  \n").unwrap();
    let http = |key: Option<KeyFlag>, keys_file: Option<&std::path::Path>| StressArgs {
        key,
        keys_file: keys_file.map(std::path::Path::to_path_buf),
        ..args("http://127.0.0.1:1", &[1], 1.0, 100)
    };
    let cases: [(StressArgs, &str); 13] = [
        (http(None, None), "no key: give --key"),
        (http(Some(" ".parse().unwrap()), None), "no key: give --key"),
        (http(None, Some(blank.path())), "holds no key"),
        (
            http(None, Some(std::path::Path::new("/nonexistent/keys"))),
            "reading --keys-file /nonexistent/keys",
        ),
        (args("localhost:8080", &[1], 1.0, 100), "scheme"),
        (
            args("ftp://127.0.0.1:21", &[1], 1.0, 100),
            "unsupported scheme",
        ),
        (
            args("https://127.0.0.1:8443", &[1], 1.0, 100),
            "https is not supported",
        ),
        (args("udp://127.0.0.1", &[1], 1.0, 100), "no port"),
        (args("http://127.0.0.1:1", &[0], 1.0, 100), "out of range"),
        (args("http://127.0.0.1:1", &[], 1.0, 100), "no level"),
        (args("http://127.0.0.1:1", &[1], 0.0, 100), "--duration-s"),
        (
            args("udp://127.0.0.1:1", &[1], 1.0, u64::MAX),
            "--timeout-ms",
        ),
        (
            StressArgs {
                udp_depth: 0,
                ..args("udp://127.0.0.1:1", &[1], 1.0, 100)
            },
            "--udp-depth",
        ),
    ];
    for (args, expected) in cases {
        let error = match Plan::new(&args).await {
            Ok(_) => panic!("{} was accepted", args.target),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            error.contains(expected),
            "{error:?} should mention {expected:?}"
        );
    }
}

#[tokio::test]
async fn requests_take_every_asset_then_the_next_key_of_a_keys_file() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "tb_one\n\n  tb_two  \n").unwrap();
    // --key is given too (`args` gives one): the file takes precedence.
    let with_file = |target: &str| StressArgs {
        keys_file: Some(file.path().to_path_buf()),
        ..args(target, &[1], 1.0, 100)
    };
    let expected = [
        ("BTC", "tb_one"),
        ("ETH", "tb_one"),
        ("BTC", "tb_two"),
        ("ETH", "tb_two"),
        ("BTC", "tb_one"),
    ];
    let plan = Plan::new(&with_file("http://127.0.0.1:1")).await.unwrap();
    let Target::Http(requests) = &plan.target else {
        panic!("an HTTP target");
    };
    for (n, (asset, key)) in expected.iter().enumerate() {
        let request = requests.request(n);
        assert_eq!(
            request.uri().query(),
            Some(format!("asset={asset}").as_str())
        );
        assert_eq!(
            request.headers()["authorization"],
            format!("Bearer {key}").as_str()
        );
    }
    let plan = Plan::new(&with_file("udp://127.0.0.1:1")).await.unwrap();
    let Target::Udp(requests) = &plan.target else {
        panic!("a UDP target");
    };
    for (n, (asset, key)) in expected.iter().enumerate() {
        let mut datagram = requests.prefix(n).to_vec();
        datagram.extend_from_slice(b"0-0-1\"}");
        let v: serde_json::Value = serde_json::from_slice(&datagram).unwrap();
        assert_eq!(
            (v["asset"].as_str(), v["key"].as_str()),
            (Some(*asset), Some(*key))
        );
    }
}

#[tokio::test]
async fn the_path_comes_from_the_flag_or_the_target() {
    let mut with_path = args("http://127.0.0.1:1/v1/price", &[1], 1.0, 100);
    let plan = Plan::new(&with_path).await.expect("valid plan");
    let report = super::report::Report::new(&plan, &[]).expect("report");
    assert_eq!(report.path.as_deref(), Some("/v1/price"));

    with_path.path = Some("/price".to_owned());
    let error = Plan::new(&with_path).await.err().map(|e| e.to_string());
    assert!(error.is_some_and(|e| e.contains("disagrees")));
}

#[tokio::test]
async fn a_udp_report_says_how_many_requests_each_socket_kept_in_flight() {
    let plan = Plan::new(&args("udp://127.0.0.1:1", &[8], 1.0, 100))
        .await
        .expect("valid plan");
    let report = super::report::Report::new(&plan, &[]).expect("report");
    let json = serde_json::to_value(&report).expect("serializes");
    assert_eq!((&json["udp_depth"], json.get("path")), (&3.into(), None));
    assert!(super::report::header(&plan).contains("(udp, 3 in flight per socket)"));
    let plan = Plan::new(&args("http://127.0.0.1:1", &[8], 1.0, 100))
        .await
        .expect("valid plan");
    let json = serde_json::to_value(super::report::Report::new(&plan, &[]).expect("report"))
        .expect("serializes");
    assert_eq!(json.get("udp_depth"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_to_a_port_nobody_listens_on_is_refused_not_timed_out() {
    let closed = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind loopback")
        .local_addr()
        .expect("bound address");
    let tally = total(&outcomes_of(&format!("udp://{closed}"), &[1], 0.2, 1000).await);

    assert!(tally.requests > 0);
    assert_eq!(
        tally.errors.get("refused"),
        Some(&tally.requests),
        "{tally:?}"
    );
}
