//! The UDP price protocol against the running node: same answers, errors, auth and metering as
//! HTTP, the request id echoed, garbage counted and dropped.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::UdpSocket;

use crate::helpers::{TestApp, ask_udp, spawn_app, usage_rows};

/// Sends one datagram and waits up to 500 ms for the reply.
pub async fn ask(app: &TestApp, socket: &UdpSocket, request: &[u8]) -> Option<Value> {
    ask_udp(socket, app.udp, request, Duration::from_millis(500)).await
}

#[tokio::test]
async fn udp_answers_like_http_with_the_id_echoed_and_is_metered() {
    let mut app = spawn_app().await;
    let key = app.key("pro").await;
    app.wait_fresh("BTC", &key, Duration::from_secs(10)).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    let request = json!({"key": key, "asset": "btc", "id": "req-1"}).to_string();
    let reply = ask(&app, &socket, request.as_bytes()).await.unwrap();
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
    let reply = ask(&app, &socket, batch.as_bytes()).await.unwrap();
    assert_eq!(reply["id"], "b");
    let priced: Vec<&String> = reply["prices"].as_object().unwrap().keys().collect();
    assert_eq!(priced, ["BTC", "ETH"], "{reply}");
    for asset in ["BTC", "ETH"] {
        assert!(reply["prices"][asset]["price"].is_string(), "{reply}");
    }
    // A batch whose answer could not fit in a datagram is refused before anything is served.
    let many: Vec<String> = (1..=41).map(|i| format!("A{i}")).collect();
    let too_many = json!({"key": key, "assets": many, "id": "big"}).to_string();
    let reply = ask(&app, &socket, too_many.as_bytes()).await.unwrap();
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
        ("e5", json!({"key": key, "asset": 7}), "bad_request"),
    ] {
        let mut request = request;
        request["id"] = json!(id);
        let reply = ask(&app, &socket, request.to_string().as_bytes())
            .await
            .unwrap();
        assert_eq!(
            (&reply["id"], &reply["error"]["code"]),
            (&json!(id), &json!(code)),
            "{request}: {reply}"
        );
    }
    // Garbage and oversized datagrams are dropped, and counted.
    assert!(ask(&app, &socket, b"\x00\x01garbage").await.is_none());
    assert!(ask(&app, &socket, &vec![b'{'; 4000]).await.is_none());
    let health = app.get("/health", None).await.body;
    assert_eq!(health["udp"]["dropped_garbage"], 1, "{health}");
    assert_eq!(health["udp"]["dropped_oversized"], 1, "{health}");

    app.stop().await;
    let dir = app.data_dir.path();
    // One row per request with a valid key: req-1, two for the batch, the refused batch, e3,
    // e4. (e5 is not metered: a request that does not parse has no key to meter it to.)
    assert_eq!(usage_rows(dir, "WHERE protocol = 'udp'").await, 6);
    assert_eq!(
        usage_rows(dir, "WHERE protocol = 'udp' AND status = 200").await,
        3
    );
}

#[tokio::test]
async fn a_burst_from_many_sockets_is_answered_once_per_request_and_metered_exactly() {
    let mut app = spawn_app().await;
    let key = app.key("partner").await;
    app.wait_fresh("BTC", &key, Duration::from_secs(10)).await;
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
    let health = app.get("/health", None).await.body;
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
