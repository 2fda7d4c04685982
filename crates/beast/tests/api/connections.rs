//! The HTTP listeners' time limit (`http_header_timeout_ms`), over raw TCP: a header sent too
//! slowly and an idle keep-alive connection are closed at the limit; a connection that keeps
//! asking is not.

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{TestApp, spawn_app_with, sql};

const LIMIT: Duration = Duration::from_millis(400);

async fn app_with_limit() -> TestApp {
    spawn_app_with(|dir| async move {
        let limit = LIMIT.as_millis().to_string();
        sql(
            &dir,
            &[&format!(
                "UPDATE application_parameters SET value = '{limit}' WHERE name = 'http_header_timeout_ms'"
            )],
        )
        .await;
    })
    .await
}

/// Reads until the server closes the connection (or 5 s pass: a failure); returns what came
/// and how long after `since` the close came.
async fn until_closed(stream: &mut TcpStream, since: Instant) -> (Vec<u8>, Duration) {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got))
        .await
        .expect("the connection is closed within 5 s")
        .expect("read");
    (got, since.elapsed())
}

/// One keep-alive request on `stream`: the status line and body of its answer.
async fn ask(stream: &mut TcpStream, path: &str, key: &str) -> (String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nX-API-Key: {key}\r\n\r\n");
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
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .expect("a content-length");
        if body.len() >= length {
            return (head.lines().next().unwrap().to_owned(), body.to_owned());
        }
    }
}

#[tokio::test]
async fn a_header_sent_too_slowly_is_closed_at_the_time_limit_and_the_node_serves_on() {
    let app = app_with_limit().await;
    let key = app.key("partner").await;
    let mut slow = TcpStream::connect(app.price).await.unwrap();
    let opened = Instant::now();
    slow.write_all(b"GET /price?asset=BTC HTTP/1.1\r\nHost: test\r\n")
        .await
        .unwrap();
    let (got, after) = until_closed(&mut slow, opened).await;
    assert!(after >= LIMIT, "closed after {after:?}, before the limit");
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    // The other listeners have the same limit.
    for addr in [app.health, app.report] {
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let (_, after) = until_closed(&mut silent, Instant::now()).await;
        assert!(after >= LIMIT, "{addr}: closed after {after:?}");
    }
    let mut fresh = TcpStream::connect(app.price).await.unwrap();
    let (status, body) = ask(&mut fresh, "/price?asset=BTC", &key).await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
}

#[tokio::test]
async fn an_idle_connection_is_closed_at_the_limit_but_one_that_keeps_asking_is_not() {
    let app = app_with_limit().await;
    let key = app.key("partner").await;
    let mut busy = TcpStream::connect(app.price).await.unwrap();
    let opened = Instant::now();
    // Asking every 100 ms for 2.5 limits: never idle for a whole limit, so never closed.
    let mut answered = 0;
    let last = loop {
        let (status, body) = ask(&mut busy, "/price?asset=BTC", &key).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
        answered += 1;
        let last = Instant::now();
        if opened.elapsed() >= LIMIT * 5 / 2 {
            break last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(answered >= 8, "{answered} answered");
    // Then idle: closed a limit after the last answer (whose clock started as it was sent,
    // just before it arrived here).
    let (got, after) = until_closed(&mut busy, last).await;
    assert!(
        after >= LIMIT - Duration::from_millis(50),
        "closed after {after:?}"
    );
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
}
