//! The UDP price protocol against the running node: same answers, errors, auth and metering as
//! HTTP, the request id echoed, garbage counted and dropped.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use tokio::net::UdpSocket;

use crate::helpers::{
    TestApp, ask_udp, refusal_code, scalar, spawn_app, spawn_app_with_on_demand_okx,
    spawn_app_with_parameters, spawn_app_with_settings, usage_rows,
};

/// Sends one datagram and returns its reply, waiting up to 5 s (the machine may be busy).
pub async fn ask(app: &TestApp, socket: &UdpSocket, request: &[u8]) -> Value {
    ask_udp(socket, app.udp, request, Duration::from_secs(5))
        .await
        .expect("a reply within 5 s")
}

/// Sends one datagram that must go unanswered: no reply within 500 ms.
pub async fn unanswered(app: &TestApp, socket: &UdpSocket, request: &[u8]) -> bool {
    ask_udp(socket, app.udp, request, Duration::from_millis(500))
        .await
        .is_none()
}

#[tokio::test]
async fn udp_answers_like_http_with_the_id_echoed_and_is_metered() {
    let mut app = spawn_app().await;
    let key = app.priced_key("pro").await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    let request = json!({"key": key, "asset": "btc", "id": "req-1"}).to_string();
    let reply = ask(&app, &socket, request.as_bytes()).await;
    assert_eq!(
        (&reply["id"], &reply["asset"], &reply["quote"]),
        (&json!("req-1"), &json!("BTC"), &json!("USD")),
        "{reply}"
    );
    assert!(reply["price"].as_str().unwrap().parse::<f64>().unwrap() > 0.0);
    let http = app.get("/price?asset=BTC", Some(&key)).await.body;
    // The same body as HTTP: the same fields, the same asset, quote and sources.
    let fields = |v: &Value| {
        v.as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "id")
            .cloned()
            .collect::<Vec<_>>()
    };
    let sources = |v: &Value| {
        v["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["source"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(fields(&reply), fields(&http), "same body as HTTP");
    for field in ["asset", "quote"] {
        assert_eq!(reply[field], http[field], "{field}");
    }
    assert_eq!(sources(&reply), sources(&http));

    // A batch: each asset once, however often it is named.
    let batch = json!({"key": key, "assets": ["BTC", "ETH", "btc"], "id": "b"}).to_string();
    let reply = ask(&app, &socket, batch.as_bytes()).await;
    assert_eq!(reply["id"], "b");
    let priced: Vec<&String> = reply["prices"].as_object().unwrap().keys().collect();
    assert_eq!(priced, ["BTC", "ETH"], "{reply}");
    for asset in ["BTC", "ETH"] {
        assert!(reply["prices"][asset]["price"].is_string(), "{reply}");
    }
    // A batch whose answer could not fit in a datagram is refused before anything is served.
    let many: Vec<String> = (1..=41).map(|i| format!("A{i}")).collect();
    let too_many = json!({"key": key, "assets": many, "id": "big"}).to_string();
    let reply = ask(&app, &socket, too_many.as_bytes()).await;
    assert_eq!(
        (&reply["id"], &reply["error"]["code"]),
        (&json!("big"), &json!("bad_request")),
        "{reply}"
    );

    // Errors carry the HTTP codes; nothing valid goes unanswered.
    for (id, request, code) in [
        ("e1", json!({"asset": "BTC"}), "missing_api_key"),
        (
            "e2",
            json!({"key": "tb_wrong", "asset": "BTC"}),
            "invalid_api_key",
        ),
        (
            "e3",
            json!({"key": key, "asset": "NOSUCHCOIN"}),
            "unknown_asset",
        ),
        ("e4", json!({"key": key}), "bad_request"),
        // JSON that is not a valid request is keyed first, as HTTP keys a bad query; with no
        // key to read, why it is not a request is the answer.
        ("e5", json!({"key": key, "asset": 7}), "bad_request"),
        (
            "e7",
            json!({"key": "tb_wrong", "asset": 7}),
            "invalid_api_key",
        ),
        (
            "e8",
            json!({"asset": "BTC", "source": ["okx"]}),
            "bad_request",
        ),
        // As HTTP's `/prices?assets=`: a batch names at least one asset.
        ("e6", json!({"key": key, "assets": []}), "bad_request"),
    ] {
        let mut request = request;
        request["id"] = json!(id);
        let reply = ask(&app, &socket, request.to_string().as_bytes()).await;
        assert_eq!(
            (&reply["id"], &reply["error"]["code"]),
            (&json!(id), &json!(code)),
            "{request}: {reply}"
        );
    }
    // A client without a key is told where a UDP request carries it.
    let reply = ask(&app, &socket, br#"{"asset":"BTC"}"#).await;
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(r#"UDP: the request's "key""#), "{reply}");
    // A request is an object: an array is not read as its fields in order.
    let array = json!([key, "BTC"]).to_string();
    let reply = ask(&app, &socket, array.as_bytes()).await;
    assert_eq!(
        reply["error"]["message"], "bad request: a request is a JSON object",
        "{reply}"
    );
    // An id too long to echo is refused, and metered: the key is good.
    let long = json!({"key": key, "asset": "BTC", "id": "x".repeat(65)}).to_string();
    let reply = ask(&app, &socket, long.as_bytes()).await;
    assert_eq!(reply, json!({"error": reply["error"]}), "no id echoed");
    assert_eq!(reply["error"]["code"], "bad_request", "{reply}");
    // JSON nested deeper than serde_json reads (128) is still JSON: answered, not dropped
    // (its key unread at that depth).
    let deep = format!(
        r#"{{"key":"{key}","asset":{}"k"{},"id":"d"}}"#,
        "[".repeat(300),
        "]".repeat(300)
    );
    let reply = ask(&app, &socket, deep.as_bytes()).await;
    assert_eq!(reply["error"]["code"], "bad_request", "{reply}");
    // Refused for their key: e1, e2, e7 and the one told where its key goes; JSON with no key
    // to read is not counted so.
    let stats = app.stress_stats().await;
    assert_eq!(stats["counters"]["auth_failures"], 4, "{stats}");
    // Garbage and oversized datagrams are dropped, and counted.
    assert!(unanswered(&app, &socket, b"\x00\x01garbage").await);
    assert!(unanswered(&app, &socket, &vec![b'{'; 4000]).await);
    let health = app.health().await;
    assert_eq!(health["udp"]["dropped_garbage"], 1, "{health}");
    assert_eq!(health["udp"]["dropped_oversized"], 1, "{health}");

    app.stop().await;
    let dir = app.data_dir.path();
    // One row per request with a valid key: req-1, two for the batch, the refused batch, e3,
    // e4, e5, e6 and the long id.
    assert_eq!(usage_rows(dir, "WHERE protocol = 'udp'").await, 9);
    assert_eq!(
        usage_rows(dir, "WHERE protocol = 'udp' AND status = 200").await,
        3
    );
}

#[tokio::test]
async fn an_answer_longer_than_a_udp_reply_takes_is_refused_and_not_counted_as_served() {
    // 508 bytes, the least: a price with the simulator's sources takes more.
    let mut app = spawn_app_with_parameters(&[("udp_max_answer_bytes", "508")]).await;
    let (key, key_id) = app.key_with_id("pro").await;
    let http = app.wait_fresh("BTC", &key, Duration::from_secs(15)).await;
    app.wait_fresh("ETH", &key, Duration::from_secs(15)).await;
    assert!(http.body.to_string().len() > 508, "{}", http.body);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for (request, instead) in [
        (
            json!({"key": key, "asset": "BTC", "id": "one"}),
            "GET /price",
        ),
        (
            json!({"key": key, "assets": ["BTC", "ETH"], "id": "two"}),
            "GET /prices",
        ),
    ] {
        let reply = ask(&app, &socket, request.to_string().as_bytes()).await;
        assert_eq!(
            (&reply["id"], &reply["error"]["code"]),
            (&request["id"], &json!("too_large_for_udp")),
            "{reply}"
        );
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(
            message.ends_with(&format!("(508); ask over HTTP instead ({instead})")),
            "{message}"
        );
    }
    // Errors are short and not held to it.
    let unknown = json!({"key": key, "asset": "NOSUCHCOIN"}).to_string();
    let reply = ask(&app, &socket, unknown.as_bytes()).await;
    assert_eq!(reply["error"]["code"], "unknown_asset", "{reply}");

    app.stop().await;
    let dir = app.data_dir.path();
    assert_eq!(
        usage_rows(dir, "WHERE protocol = 'udp' AND status = 413").await,
        2,
        "each refusal metered once"
    );
    assert_eq!(usage_rows(dir, "WHERE protocol = 'udp'").await, 3);
    // Nothing was served over UDP: the month's count holds only the HTTP answers.
    let http_served = usage_rows(dir, "WHERE protocol = 'http' AND status = 200").await;
    let counted: i64 = scalar(
        dir,
        &format!("SELECT usage_count FROM api_keys WHERE id = {key_id}"),
    )
    .await;
    assert_eq!(counted, http_served);
}

#[tokio::test]
async fn keyless_refusals_are_answered_within_the_address_allowance_and_keyed_requests_always() {
    let mut app = spawn_app_with_parameters(&[("unauthenticated_per_ip_per_minute", "3")]).await;
    let key = app.priced_key("pro").await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let keyless = |i: usize| json!({"key": "tb_forged", "asset": "BTC", "id": i}).to_string();
    for i in 0..3 {
        let reply = ask(&app, &socket, keyless(i).as_bytes()).await;
        assert_eq!(reply["error"]["code"], "invalid_api_key", "{reply}");
    }
    // Past the allowance, a refusal goes unanswered (a forged source gets little from us),
    // on both UDP listeners, which share it; a request with a valid key is answered.
    assert!(unanswered(&app, &socket, keyless(3).as_bytes()).await);
    assert!(unanswered(&app, &socket, b"[1]").await);
    let report = json!({"report": "summary", "id": "r"}).to_string();
    let silent = ask_udp(
        &socket,
        app.report_udp,
        report.as_bytes(),
        Duration::from_millis(500),
    );
    assert!(silent.await.is_none());
    let priced = json!({"key": key, "asset": "BTC", "id": "paid"}).to_string();
    let reply = ask(&app, &socket, priced.as_bytes()).await;
    assert!(reply["price"].is_string(), "{reply}");
    let health = app.health().await;
    assert_eq!(health["udp"]["unanswered_keyless"], 2, "{health}");
    assert_eq!(health["report_udp"]["unanswered_keyless"], 1, "{health}");
    let stats = app.stress_stats().await;
    assert_eq!(stats["counters"]["udp_packets_dropped"], 2, "{stats}");
    // HTTP's allowance is its own: forged datagrams cannot spend it.
    for _ in 0..3 {
        assert_eq!(app.get("/exchanges", None).await.status, 200);
    }
    app.stop().await;
}

#[tokio::test]
async fn an_answer_still_being_fetched_when_the_node_stops_is_finished_and_metered() {
    let mut app = spawn_app_with_on_demand_okx(&[("rest_timeout_ms", "5000")]).await;
    let key = app.key("partner").await;
    app.wait_priced_by("BTC", "okx", &key).await;
    // QQQ is not live: its answer is fetched from OKX's REST ticker, made 1.5 s slow.
    app.fault(json!({"exchange": "okx", "kind": "slow_rest", "delay_ms": 1500}))
        .await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let request = json!({"key": key, "asset": "QQQ", "id": "late"}).to_string();
    socket.send_to(request.as_bytes(), app.udp).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The node stops while the fetch is under way: the listener waits for the answer (the
    // simulator, stopped only after the listeners, still serves it), then the row is written.
    let mut buf = vec![0u8; 65_536];
    let ((), received) = tokio::join!(
        app.stop(),
        tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
    );
    let (len, _) = received.expect("answered").unwrap();
    let reply: Value = serde_json::from_slice(&buf[..len]).unwrap();
    assert_eq!(
        (&reply["id"], &reply["asset"]),
        (&json!("late"), &json!("QQQ")),
        "{reply}"
    );
    assert!(reply["price"].is_string(), "{reply}");
    let dir = app.data_dir.path();
    let rows = "WHERE protocol = 'udp' AND asset = 'QQQ' AND status = 200 AND cache_tier = 'rest'";
    assert_eq!(usage_rows(dir, rows).await, 1);
}

#[tokio::test]
async fn a_burst_from_many_sockets_is_answered_once_per_request_and_metered_exactly() {
    let mut app = spawn_app().await;
    let key = app.priced_key("partner").await;
    // Each socket sends everything before reading anything, so datagrams pile up and are
    // received and answered in batches: 43 good requests, 5 with a wrong key, and 3 garbage
    // and 2 oversized datagrams, interleaved.
    let mut sockets = Vec::new();
    for s in 0..4 {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for i in 0..53 {
            let datagram = match i % 10 {
                7 if i < 30 => b"not json".to_vec(),
                8 if i < 20 => vec![b' '; 3000],
                9 => json!({"key": "tb_wrong", "asset": "BTC", "id": format!("{s}-{i}")})
                    .to_string()
                    .into_bytes(),
                _ => json!({"key": key, "asset": "BTC", "id": format!("{s}-{i}")})
                    .to_string()
                    .into_bytes(),
            };
            socket.send_to(&datagram, app.udp).await.unwrap();
        }
        sockets.push(socket);
    }
    for (s, socket) in sockets.iter().enumerate() {
        let mut ids = Vec::new();
        let mut buf = vec![0u8; 65_536];
        while let Ok(Ok((len, _))) =
            tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf)).await
        {
            let reply: Value = serde_json::from_slice(&buf[..len]).unwrap();
            let id = reply["id"].as_str().unwrap().to_owned();
            let wrong_key = id.ends_with('9');
            let expected = if wrong_key { "invalid_api_key" } else { "" };
            assert_eq!(
                reply["error"]["code"].as_str().unwrap_or(""),
                expected,
                "{reply}"
            );
            if !wrong_key {
                assert_eq!(reply["asset"], "BTC", "{reply}");
            }
            ids.push(id);
        }
        ids.sort();
        let mut expected: Vec<String> = (0..53)
            .filter(|i| !(i % 10 == 7 && *i < 30 || i % 10 == 8 && *i < 20))
            .map(|i| format!("{s}-{i}"))
            .collect();
        expected.sort();
        assert_eq!(ids, expected, "socket {s}: each request answered once");
    }
    let health = app.health().await;
    assert_eq!(health["udp"]["dropped_garbage"], 4 * 3, "{health}");
    assert_eq!(health["udp"]["dropped_oversized"], 4 * 2, "{health}");
    assert_eq!(health["udp"]["received"], 4 * 53, "{health}");
    assert_eq!(health["udp"]["sent"], 4 * 48, "{health}");

    app.stop().await;
    let dir = app.data_dir.path();
    // A wrong key has no key to meter to: only the good requests are rows.
    assert_eq!(usage_rows(dir, "WHERE protocol = 'udp'").await, 4 * 43);
    assert_eq!(
        usage_rows(dir, "WHERE protocol = 'udp' AND status = 200").await,
        4 * 43
    );
}

/// Datagrams made from `bases` by one to three random edits each (bit flips, JSON fragments,
/// cuts, repeats, padding past the size limit), plus random bytes for every tenth and an empty
/// one; the same for a given seed.
pub fn mutants(seed: u64, bases: &[Vec<u8>], n: usize) -> Vec<Vec<u8>> {
    const FRAGMENTS: &[&[u8]] = &[
        b"\"",
        b"\\",
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b":",
        b"null",
        b"1e999",
        b"-0",
        b"true",
        b"\"\\u00e9\"",
        b"[[[[[[[[",
        b"\x00",
        b"\xff\xfe",
        "\u{20ac}".as_bytes(),
        b"\"id\":",
        b"\"key\":\"\",",
        b"\"assets\":[],",
        b"\"asset\":[\"BTC\"],",
    ];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = vec![Vec::new()];
    while out.len() < n {
        if out.len() % 10 == 0 {
            let len = rng.random_range(1..3000);
            out.push((0..len).map(|_| rng.random::<u8>()).collect());
            continue;
        }
        let mut d = bases[rng.random_range(0..bases.len())].clone();
        for _ in 0..rng.random_range(1..=3) {
            let at = rng.random_range(0..=d.len());
            let end = |rng: &mut StdRng, most: usize| (at + rng.random_range(1..most)).min(d.len());
            match rng.random_range(0..6) {
                0 if at < d.len() => d[at] ^= 1 << rng.random_range(0..8),
                1 => {
                    let fragment = FRAGMENTS[rng.random_range(0..FRAGMENTS.len())];
                    d.splice(at..at, fragment.iter().copied());
                }
                2 => {
                    let end = end(&mut rng, 8);
                    d.drain(at..end);
                }
                3 => d.truncate(at),
                4 => {
                    let end = end(&mut rng, 16);
                    let piece = d[at..end].to_vec();
                    d.splice(at..at, piece);
                }
                _ => {
                    let pad = rng.random_range(1..3000);
                    d.splice(at..at, std::iter::repeat_n(b' ', pad));
                }
            }
        }
        out.push(d);
    }
    out
}

/// Whether a listener must answer a datagram: JSON within the size limit. Anything else is
/// dropped. (Read as a `Value`, which stops at 128 levels: no datagram here nests that deep.)
fn answerable(datagram: &[u8]) -> bool {
    !oversized(datagram) && serde_json::from_slice::<Value>(datagram).is_ok()
}

fn oversized(datagram: &[u8]) -> bool {
    datagram.len() > beast_api::udp::MAX_REQUEST
}

/// How many of `datagrams` a listener drops as oversized, and as garbage (not JSON).
pub fn dropped(datagrams: &[Vec<u8>]) -> (usize, usize) {
    let oversized = datagrams.iter().filter(|d| oversized(d)).count();
    let answerable = datagrams.iter().filter(|d| answerable(d)).count();
    (oversized, datagrams.len() - oversized - answerable)
}

/// Sends `datagrams` to `to`, a few at a time so no reply is lost to a full client buffer,
/// and returns the replies; asserts that each answerable datagram got exactly one and nothing
/// else got any.
pub async fn answers(to: std::net::SocketAddr, datagrams: &[Vec<u8>]) -> Vec<Value> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = vec![0u8; 65_536];
    let mut replies = Vec::new();
    for window in datagrams.chunks(16) {
        for d in window {
            socket.send_to(d, to).await.unwrap();
        }
        for _ in window.iter().filter(|d| answerable(d)) {
            let (len, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
                .await
                .expect("every JSON datagram is answered")
                .unwrap();
            replies.push(serde_json::from_slice(&buf[..len]).unwrap());
        }
    }
    let extra = tokio::time::timeout(Duration::from_millis(300), socket.recv_from(&mut buf)).await;
    assert!(extra.is_err(), "nothing but one answer per JSON datagram");
    replies
}

#[tokio::test]
async fn mutated_and_random_datagrams_are_each_answered_or_counted_and_the_node_serves_on() {
    // Most mutants spoil the key: every refusal is answered, however many from one address.
    let mut app = spawn_app_with_parameters(&[("unauthenticated_per_ip_per_minute", "0")]).await;
    let key = app.key("partner").await;
    // Every asset and source the requests name priced first, so a 503 for a price not yet in
    // does not pass for a server error (errors_5xx must read 0).
    for asset in ["BTC", "ETH"] {
        app.wait_priced_by(asset, "kraken-ws", &key).await;
    }
    let bases: Vec<Vec<u8>> = [
        json!({"key": key, "asset": "BTC", "id": "f-1"}),
        json!({"key": key, "assets": ["BTC", "ETH"], "id": "f-2"}),
        json!({"key": key, "asset": "ETH", "source": "kraken-ws"}),
        json!([key, "BTC"]),
    ]
    .iter()
    .map(|v| v.to_string().into_bytes())
    .collect();
    let datagrams = mutants(0x5eed_0004, &bases, 2000);
    let (oversized, garbage) = dropped(&datagrams);
    let replies = answers(app.udp, &datagrams).await;
    let answered = replies.len();
    assert!(
        answered > 400 && oversized > 200 && answered + oversized < 1500,
        "the mix covers each path: {answered} answerable, {oversized} oversized, the \
         rest garbage"
    );
    for reply in &replies {
        assert!(
            refusal_code(reply).is_some()
                || reply["price"].is_string()
                || reply["prices"].is_object(),
            "an answer is a price or an error with a code, never a server error: {reply}"
        );
    }
    // The send count lands just after the replies: wait for it, then every count is exact.
    let health = app
        .eventually("the last send counted", Duration::from_secs(5), || async {
            let health = app.health().await;
            (health["udp"]["sent"] == answered).then_some(health)
        })
        .await;
    let udp = &health["udp"];
    assert_eq!(udp["received"], datagrams.len(), "{health}");
    assert_eq!(udp["requests"], answered, "{health}");
    assert_eq!(udp["sent"], answered, "{health}");
    assert_eq!(udp["dropped_oversized"], oversized, "{health}");
    assert_eq!(udp["dropped_garbage"], garbage, "{health}");
    let stats = app.stress_stats().await;
    assert_eq!(stats["counters"]["errors_5xx"], 0, "{stats}");
    // And the node still serves a good request.
    let good = json!({"key": key, "asset": "BTC", "id": "after"}).to_string();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let reply = ask(&app, &socket, good.as_bytes()).await;
    assert_eq!(
        (&reply["id"], reply["price"].is_string()),
        (&json!("after"), true)
    );
    app.stop().await;
}

/// The one-pass scan reads a request exactly as serde_json does: over fuzzed requests, each
/// one the scan takes is the request serde_json makes of it, and the scan takes most valid
/// ones, leaving the odd ones (escapes, repeats, other types) to serde_json.
#[test]
fn the_request_scan_reads_what_serde_json_reads() {
    use beast_api::udp::request::{Request, scan};
    let key = format!("tb_{}", "a1".repeat(32));
    let bases: Vec<Vec<u8>> = [
        format!(r#"{{"key":"{key}","asset":"BTC","id":"s-1"}}"#),
        format!(r#"{{"key":"{key}","assets":["BTC","ETH"],"id":"s-2"}}"#),
        format!(r#"{{"key":"{key}","asset":"ETH","source":"kraken-ws"}}"#),
        format!(" {{ \"id\" : \"é ✓\",\t\"key\":\"{key}\" ,\n\"assets\" : [ ] }}\r\n"),
        format!(r#"{{"asset":"SOL","key":"{key}","assets":[ "X" , "Y" ],"source":"okx"}}"#),
        r#"{"key":"k\"q","asset":"BTC\u0041"}"#.to_owned(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    for base in &bases[..5] {
        assert!(scan(base).is_some(), "{}", String::from_utf8_lossy(base));
    }
    assert!(scan(&bases[5]).is_none(), "escapes are left to serde_json");
    let datagrams = mutants(0x5eed_0007, &bases, 30_000);
    let (mut scanned, mut left) = (0, 0);
    for d in &datagrams {
        let general = serde_json::from_slice::<Request>(d).ok();
        match scan(d) {
            Some(request) => {
                scanned += 1;
                assert_eq!(
                    Some(&request),
                    general.as_ref(),
                    "{}",
                    String::from_utf8_lossy(d)
                );
            }
            None if general.is_some() => left += 1,
            None => {}
        }
    }
    assert!(
        scanned > 5_000 && left > 1_000,
        "{scanned} scanned, {left} valid ones left to serde_json"
    );
}

/// Bound to every address, both UDP listeners answer a client from the address it sent to:
/// one connected to 127.0.0.2 (another of this host's addresses on loopback) takes replies
/// only from there.
#[tokio::test]
async fn listeners_bound_to_every_address_reply_from_the_address_asked() {
    let any: std::net::SocketAddr = "0.0.0.0:0".parse().unwrap();
    let mut app = spawn_app_with_settings(
        |_| async {},
        |settings| {
            settings.price_udp = any;
            settings.report_udp = any;
        },
    )
    .await;
    let key = app.priced_key("pro").await;
    for (port, request) in [
        (
            app.udp.port(),
            json!({"key": key, "asset": "BTC", "id": "p"}),
        ),
        (
            app.report_udp.port(),
            json!({"key": key, "report": "summary", "id": "r"}),
        ),
    ] {
        let client = UdpSocket::bind("127.0.0.2:0").await.unwrap();
        client.connect(("127.0.0.2", port)).await.unwrap();
        client.send(request.to_string().as_bytes()).await.unwrap();
        let mut buf = vec![0; 65_536];
        let got = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no reply from 127.0.0.2:{port}"))
            .unwrap();
        let reply: Value = serde_json::from_slice(&buf[..got]).unwrap();
        assert_eq!(reply["id"], request["id"], "{reply}");
        assert!(reply.get("error").is_none(), "{reply}");
    }
    app.stop().await;
}
