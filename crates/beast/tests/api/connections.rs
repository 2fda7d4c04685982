//! The HTTP listeners' time limit (`http_header_timeout_ms`), over raw TCP: a header sent too
//! slowly (at once or byte by byte) and an idle keep-alive connection are closed at the limit;
//! a connection that keeps asking is not.

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{TestApp, spawn_app_with, sql};

const LIMIT: Duration = Duration::from_millis(400);
/// How late after the limit a close may come on a busy machine.
const SLACK: Duration = Duration::from_millis(1500);

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

/// Reads until the server closes the connection (an end of stream, or a reset when bytes sent
/// were still unread); asserts the close came between `LIMIT` and `LIMIT + SLACK` after
/// `since` (which is before the server's clock started), and returns what came before it.
async fn closed_at_the_limit(stream: &mut (impl AsyncRead + Unpin), since: Instant) -> Vec<u8> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(LIMIT + SLACK, stream.read_to_end(&mut got))
        .await
        .unwrap_or_else(|_| panic!("still open {:?} after the limit", SLACK));
    if let Err(e) = read {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    let after = since.elapsed();
    assert!(after >= LIMIT, "closed {after:?} after, before the limit");
    got
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
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("an answer within 5 s")
}

#[tokio::test]
async fn a_header_sent_too_slowly_is_closed_at_the_time_limit_and_the_node_serves_on() {
    let app = app_with_limit().await;
    let key = app.key("partner").await;
    // Half a header, then nothing.
    let opened = Instant::now();
    let mut slow = TcpStream::connect(app.price).await.unwrap();
    slow.write_all(b"GET /price?asset=BTC HTTP/1.1\r\nHost: test\r\n")
        .await
        .unwrap();
    let got = closed_at_the_limit(&mut slow, opened).await;
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
    let got = closed_at_the_limit(&mut read, opened).await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    drip.abort();
    // The other listeners have the same limit.
    for addr in [app.health, app.report] {
        let opened = Instant::now();
        let mut silent = TcpStream::connect(addr).await.unwrap();
        closed_at_the_limit(&mut silent, opened).await;
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
    // Asking every 20 ms for 2.5 limits: never idle for a whole limit (a stall of 380 ms would
    // be), so never closed.
    let mut answered = 0;
    let last_asked = loop {
        let asked = Instant::now();
        let (status, body) = ask(&mut busy, "/price?asset=BTC", &key).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
        answered += 1;
        if opened.elapsed() >= LIMIT * 5 / 2 {
            break asked;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(answered >= 3, "{answered} answered");
    // Then idle: closed a limit after the last answer (whose clock started after it was asked).
    let got = closed_at_the_limit(&mut busy, last_asked).await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
}
