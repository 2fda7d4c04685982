//! The HTTP listeners' time limits, over raw TCP. `http_header_timeout_ms`: a header sent too
//! slowly (at once or byte by byte) and an idle keep-alive connection are closed at the limit;
//! a connection that keeps asking is not. `http_write_timeout_ms`: a client that stops reading a
//! streamed export is closed; one that reads slowly is not. `http_max_header_bytes`: a longer
//! header is answered 431. `unauthenticated_per_ip_per_minute`: requests without a valid key are
//! limited per client address.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

use beast_core::now_ms;

use crate::helpers::{TestApp, spawn_app, spawn_app_with_parameters, sql};

const LIMIT: Duration = Duration::from_millis(400);
/// How late after the limit a close may come on a busy machine.
const SLACK: Duration = Duration::from_millis(1500);

/// The node still answers a keyed `/price`, on a fresh connection.
async fn serves_on(app: &TestApp, key: &str) {
    let reply = app.get("/price?asset=BTC", Some(key)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

/// A node whose time limit `parameter` is `limit`.
async fn app_with_limit(parameter: &str, limit: Duration) -> TestApp {
    spawn_app_with_parameters(&[(parameter, &limit.as_millis().to_string())]).await
}

/// Reads until the server closes the connection (an end of stream, or a reset when bytes sent
/// were still unread), which must come `within`; returns what came before it.
async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin), within: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut got))
        .await
        .unwrap_or_else(|_| panic!("still open after {within:?}"));
    if let Err(e) = read {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    got
}

/// [`read_until_closed`], asserting the close came between `limit` and `limit + SLACK` after
/// `since` (which is before the server's clock started).
async fn closed_at_the_limit(
    stream: &mut (impl AsyncRead + Unpin),
    since: Instant,
    limit: Duration,
) -> Vec<u8> {
    let by = (since + limit + SLACK).saturating_duration_since(Instant::now());
    let got = read_until_closed(stream, by).await;
    let after = since.elapsed();
    assert!(after >= limit, "closed {after:?} after, before the limit");
    got
}

/// The value of the header `name` (lowercase) in an answer's head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// One keep-alive request on `stream` (within 5 s): the status line and body of its answer.
async fn ask(stream: &mut TcpStream, path: &str, key: &str) -> (String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nX-API-Key: {key}\r\n\r\n");
    let exchange = async {
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed mid-answer: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let length: usize = header(head, "content-length")
                .expect("a content-length")
                .parse()
                .unwrap();
            if body.len() >= length {
                return (head.lines().next().unwrap().to_owned(), body.to_owned());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("an answer within 5 s")
}

#[tokio::test]
async fn a_header_sent_too_slowly_is_closed_at_the_time_limit_and_the_node_serves_on() {
    let app = app_with_limit("http_header_timeout_ms", LIMIT).await;
    let key = app.priced_key("partner").await;
    // Half a header, then nothing.
    let opened = Instant::now();
    let mut slow = TcpStream::connect(app.price).await.unwrap();
    slow.write_all(b"GET /price?asset=BTC HTTP/1.1\r\nHost: test\r\n")
        .await
        .unwrap();
    let got = closed_at_the_limit(&mut slow, opened, LIMIT).await;
    // No answer at all, not even a 408.
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    // A header sent a byte every 60 ms (about 7.5 s in all, well past the limit and its slack):
    // bytes coming do not restart the clock.
    let header = format!("GET /price?asset=BTC HTTP/1.1\r\nHost: test\r\nX-API-Key: {key}\r\n\r\n");
    let opened = Instant::now();
    let (mut read, mut write) = TcpStream::connect(app.price).await.unwrap().into_split();
    let drip = tokio::spawn(async move {
        for byte in header.bytes() {
            if write.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    });
    let got = closed_at_the_limit(&mut read, opened, LIMIT).await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    drip.abort();
    // The other listeners have the same limit.
    for addr in [app.health, app.report] {
        let opened = Instant::now();
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let got = closed_at_the_limit(&mut silent, opened, LIMIT).await;
        assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    }
    serves_on(&app, &key).await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_at_the_limit_but_one_that_keeps_asking_is_not() {
    // A longer limit here: the node shares the test's one thread, and a stall as long as the
    // limit between two requests would close the busy connection.
    const IDLE_LIMIT: Duration = Duration::from_secs(1);
    let app = app_with_limit("http_header_timeout_ms", IDLE_LIMIT).await;
    let key = app.priced_key("partner").await;
    let mut busy = TcpStream::connect(app.price).await.unwrap();
    let opened = Instant::now();
    // Asking every 20 ms for 2.5 limits: never idle for a whole limit, so never closed.
    let mut answered = 0;
    let last_asked = loop {
        let asked = Instant::now();
        let (status, body) = ask(&mut busy, "/price?asset=BTC", &key).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
        answered += 1;
        if opened.elapsed() >= IDLE_LIMIT * 5 / 2 {
            break asked;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(answered >= 3, "{answered} answered");
    // Then idle: closed a limit after the last answer (whose clock started after it was asked).
    let got = closed_at_the_limit(&mut busy, last_asked, IDLE_LIMIT).await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
}

/// Usage rows enough for a CSV export (about 16 MB) far larger than what the sockets on both
/// ends buffer (the kernel's send buffer grows to 4 MB at most by default).
const EXPORT_ROWS: usize = 200_000;

/// A connection to `addr` with a 16 KiB receive buffer, so what the server sends waits in its
/// own send buffer: at most 4 MB by default, a quarter of the export. A host whose send
/// buffers may grow past half the export cannot tell a cut export from a whole one here.
async fn small_buffered(addr: SocketAddr) -> TcpStream {
    let wmem = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").unwrap_or_default();
    let max: usize = wmem
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        max < EXPORT_ROWS * 80 / 2,
        "net.ipv4.tcp_wmem allows {max}-byte send buffers: the export must be larger"
    );
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Reads an HTTP/1.0 answer until the server closes: its status line, and how many lines its
/// body has. After each `burst` bytes it pauses for `pause`.
async fn read_answer(stream: &mut TcpStream, burst: usize, pause: Duration) -> (String, usize) {
    let mut got = Vec::new();
    let mut since_pause = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
                break;
            }
        }
        if got.len() - since_pause >= burst {
            since_pause = got.len();
            tokio::time::sleep(pause).await;
        }
    }
    let at = memchr::memmem::find(&got, b"\r\n\r\n").expect("an answer's head");
    let status = String::from_utf8_lossy(&got[..at])
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    let lines = got[at + 4..].iter().filter(|b| **b == b'\n').count();
    (status, lines)
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_closed_at_the_write_limit_but_a_slow_one_is_not() {
    // A longer limit here: the slow reader's pauses must stay well within it on a busy machine.
    const WRITE_LIMIT: Duration = Duration::from_secs(2);
    let app = app_with_limit("http_write_timeout_ms", WRITE_LIMIT).await;
    // Made first (and not used, so the export holds only the rows below), so the check at the
    // end asks once, of a node that has been through the stall and has long had BTC's price.
    let key = app.key("partner").await;
    let newest = now_ms();
    sql(
        app.data_dir.path(),
        &[&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {EXPORT_ROWS}) \
             INSERT INTO usage_logs (ts_ms, key_id, asset, source, protocol, node, status, latency_us, cache_tier) \
             SELECT {newest} - i, 1, 'BTC', 'kraken-ws', 'http', 'n1', 200, 50, 'memory' FROM n"
        )],
    )
    .await;
    // HTTP/1.0: the body ends where the server closes, so a cut export is told by its lines.
    let export = format!(
        "GET /reports/usage?page_size=all&format=csv HTTP/1.0\r\nX-API-Key: {}\r\n\r\n",
        app.admin_key
    );

    // A slow reader: 1 MiB at a time, then a pause of a quarter of the limit. Its small receive
    // buffer keeps the server writing for the whole read (some 16 pauses, four times the
    // limit): never cut, as no single write waits for the limit.
    let mut slow = small_buffered(app.report).await;
    slow.write_all(export.as_bytes()).await.unwrap();
    let (status, lines) = tokio::time::timeout(
        Duration::from_secs(120),
        read_answer(&mut slow, 1 << 20, WRITE_LIMIT / 4),
    )
    .await
    .expect("the export read within 120 s");
    assert_eq!(status, "HTTP/1.0 200 OK");
    assert_eq!(lines, EXPORT_ROWS + 1, "a head line and every row");

    // A reader that stops: nothing read for the limit and its slack (and the time the export
    // takes to fill the buffers), then what is left: cut short.
    let mut stalled = small_buffered(app.report).await;
    stalled.write_all(export.as_bytes()).await.unwrap();
    tokio::time::sleep(WRITE_LIMIT + SLACK + Duration::from_secs(2)).await;
    let (status, lines) = tokio::time::timeout(
        Duration::from_secs(30),
        read_answer(&mut stalled, usize::MAX, Duration::ZERO),
    )
    .await
    .expect("the stalled connection closed");
    assert_eq!(status, "HTTP/1.0 200 OK");
    assert!(lines < EXPORT_ROWS / 2, "{lines} lines: not cut");

    // The node serves on.
    serves_on(&app, &key).await;
}

/// Asks `/price` on a fresh connection with a header padded by `padding` bytes: the status line.
async fn padded_status(app: &TestApp, key: &str, padding: usize) -> String {
    let padding = "p".repeat(padding);
    let headers = [("X-API-Key", key), ("X-Padding", padding.as_str())];
    ask_from("127.0.0.1", app.price, "GET", "/price?asset=BTC", &headers)
        .await
        .0
}

#[tokio::test]
async fn a_header_longer_than_the_limit_is_answered_431_and_the_node_serves_on() {
    const TOO_LONG: &str = "HTTP/1.1 431 Request Header Fields Too Large";
    // The default limit, 16 KiB.
    let app = spawn_app().await;
    let key = app.priced_key("partner").await;
    assert_eq!(padded_status(&app, &key, 12_000).await, "HTTP/1.1 200 OK");
    assert_eq!(padded_status(&app, &key, 20_000).await, TOO_LONG);
    serves_on(&app, &key).await;
    // A limit stored below 8 KiB (hyper's smallest) is taken as 8 KiB, not a failed start.
    let app = spawn_app_with_parameters(&[("http_max_header_bytes", "100")]).await;
    let key = app.priced_key("partner").await;
    assert_eq!(padded_status(&app, &key, 4_000).await, "HTTP/1.1 200 OK");
    assert_eq!(padded_status(&app, &key, 12_000).await, TOO_LONG);
}

/// One `method` request to `target` from the local address `from` (any of 127.0.0.0/8), with
/// `headers`, on a connection of its own: the answer's status line, `Retry-After` and body.
async fn ask_from(
    from: &str,
    target: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (String, Option<String>, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(target).await.unwrap();
    let headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: test\r\n{headers}Connection: close\r\n\r\n");
    // The node may close before reading a request it refuses: a failed write is read past.
    let _ = stream.write_all(request.as_bytes()).await;
    let got = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an answer's head");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (
        status,
        header(head, "retry-after").map(str::to_owned),
        body.to_owned(),
    )
}

/// `ask_from` a `GET` with an `X-API-Key` header if `key` is some.
async fn ask_keyed(
    from: &str,
    target: SocketAddr,
    path: &str,
    key: Option<&str>,
) -> (String, Option<String>, String) {
    let headers: Vec<(&str, &str)> = key.map(|k| ("X-API-Key", k)).into_iter().collect();
    ask_from(from, target, "GET", path, &headers).await
}

#[tokio::test]
async fn requests_no_key_pays_for_are_limited_per_address_and_keyed_ones_are_not() {
    let app = spawn_app_with_parameters(&[("unauthenticated_per_ip_per_minute", "4")]).await;
    let key = app.priced_key("partner").await;
    const OK: &str = "HTTP/1.1 200 OK";
    const UNAUTHORIZED: &str = "HTTP/1.1 401 Unauthorized";
    const LIMITED: &str = "HTTP/1.1 429 Too Many Requests";
    let (one, two) = ("127.0.0.1", "127.0.0.2");
    // Four unpaid requests from one address, of every kind, are answered as usual: public
    // endpoints, a missing key on the unrouted `GET /price`, a wrong key on a routed one.
    assert_eq!(ask_keyed(one, app.price, "/exchanges", None).await.0, OK);
    assert_eq!(ask_keyed(one, app.price, "/assets", None).await.0, OK);
    let (status, _, body) = ask_keyed(one, app.price, "/price?asset=BTC", None).await;
    assert_eq!(status, UNAUTHORIZED, "{body}");
    let (status, _, body) = ask_keyed(one, app.price, "/prices?assets=BTC", Some("wrong")).await;
    assert_eq!(status, UNAUTHORIZED, "{body}");
    // The fifth and later are refused, with when to retry (one a minute over four: 15 s at
    // most), on the report listener too.
    for (target, path, key) in [
        (app.price, "/exchanges", None),
        (app.price, "/price?asset=BTC", None),
        (app.price, "/price?asset=BTC", Some("wrong")),
        (app.price, "/prices?assets=BTC", Some("wrong")),
        (app.price, "/admin/stress-stats", Some("wrong")),
        (app.report, "/reports/summary", Some("wrong")),
        (app.report, "/nowhere", None),
    ] {
        let (status, retry_after, body) = ask_keyed(one, target, path, key).await;
        assert_eq!(status, LIMITED, "{path}: {body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], "rate_limited", "{path}: {body}");
        let wait: u64 = retry_after.expect("a Retry-After").parse().unwrap();
        assert!((1..=15).contains(&wait), "{path}: retry after {wait}");
    }
    // A price request refused for its address is counted as every refused price request is,
    // routed (`/prices`, `HEAD /price`) or not (`GET /price`): as a request, a refused key and
    // a 4xx answer. (One refused before routing would be counted nowhere.)
    let wrong = [("X-API-Key", "wrong")];
    let before = app.stress_stats().await["counters"].clone();
    for (method, path) in [
        ("GET", "/price?asset=BTC"),
        ("HEAD", "/price?asset=BTC"),
        ("GET", "/prices?assets=BTC"),
    ] {
        let (status, _, body) = ask_from(one, app.price, method, path, &wrong).await;
        assert_eq!(status, LIMITED, "{method} {path}: {body}");
    }
    let after = app.stress_stats().await["counters"].clone();
    for counter in ["tcp_requests", "auth_failures", "errors_4xx"] {
        let added = after[counter].as_u64().unwrap() - before[counter].as_u64().unwrap();
        assert_eq!(added, 3, "{counter}: {before} then {after}");
    }
    // So is a report request, as a request and a refused key, though refused before routing;
    // the price listener has no reports to ask.
    let (status, _, body) = ask_from(one, app.report, "GET", "/reports/usage", &wrong).await;
    assert_eq!(status, LIMITED, "{body}");
    let (status, _, body) = ask_from(one, app.price, "GET", "/reports/usage", &wrong).await;
    assert_eq!(status, LIMITED, "{body}");
    let reported = app.stress_stats().await["counters"].clone();
    for counter in ["report_requests", "auth_failures"] {
        let added = reported[counter].as_u64().unwrap() - after[counter].as_u64().unwrap();
        assert_eq!(added, 1, "{counter}: {after} then {reported}");
    }
    // Requests a key pays for are not limited by their address.
    let admin = app.admin_key.as_str();
    for (target, path, key) in [
        (app.price, "/price?asset=BTC", key.as_str()),
        (app.price, "/prices?assets=BTC", key.as_str()),
        (app.price, "/admin/stress-stats", admin),
        (app.report, "/reports/summary", key.as_str()),
    ] {
        let (status, _, body) = ask_keyed(one, target, path, Some(key)).await;
        assert_eq!(status, OK, "{path}: {body}");
    }
    // The admin key is a valid key on every path: on the unrouted `GET /price`, which it may
    // not ask, it is refused for what it is (401), not for its address.
    let (status, _, body) = ask_keyed(one, app.price, "/price?asset=BTC", Some(admin)).await;
    assert_eq!(status, UNAUTHORIZED, "{body}");
    // Another address has an allowance of its own; the internal health listener has no limit.
    assert_eq!(ask_keyed(two, app.price, "/exchanges", None).await.0, OK);
    assert_eq!(ask_keyed(one, app.health, "/health", None).await.0, OK);
}
