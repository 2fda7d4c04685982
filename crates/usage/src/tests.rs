use std::sync::Arc;

use beast_core::{CacheTier, Protocol, UsageEvent};
use beast_store::{SqliteStore, Store, keys};

use super::*;

fn event(key_id: i64, status: u16) -> UsageEvent {
    UsageEvent {
        ts_ms: beast_core::now_ms(),
        key_id,
        asset: "BTC".into(),
        source: "a-ws".into(),
        protocol: Protocol::Http,
        node: "n1".into(),
        status,
        latency_us: 10,
        cache_tier: CacheTier::Memory,
    }
}

/// A pipeline whose channel holds `capacity` events, writing batches of up to 50 at least
/// every 20 ms.
fn small_pipeline(capacity: usize) -> (UsageSink, UsageWriter) {
    pipeline(WriterOptions {
        capacity,
        batch_size: 50,
        flush_interval: Duration::from_millis(20),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_written_even_when_the_channel_is_tiny() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let (_, key) = keys::create(&*store, "", "pro").await.unwrap();
    let (sink, writer) = small_pipeline(8);
    let stop = CancellationToken::new();
    let task = tokio::spawn(writer.run(store.clone(), stop.clone()));
    let mut senders = Vec::new();
    for i in 0..10 {
        let sink = sink.clone();
        senders.push(tokio::spawn(async move {
            for n in 0..300 {
                sink.room(1)
                    .await
                    .unwrap()
                    .record(event(key.id, if (i + n) % 10 == 0 { 429 } else { 200 }));
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    stop.cancel();
    task.await.unwrap();
    assert_eq!(store.usage_count().await.unwrap(), 3000);
    let stats = sink.stats().snapshot();
    assert_eq!(
        (stats.queued, stats.written, stats.dropped),
        (3000, 3000, 0)
    );
    assert!(
        stats.backpressured > 0,
        "a channel of 8 must have pushed back"
    );
    // Requests waiting on a full channel are taken at once, not a fill step later, so the
    // batches fill up (60 of 50); waiting out each step gave about 76 smaller ones.
    assert!(stats.batches <= 62, "{} batches", stats.batches);
    let stored = store.api_keys().await.unwrap();
    assert_eq!(
        stored[0].usage_count, 2700,
        "only successful requests count toward the quota"
    );
}

/// A store whose write lock another connection (`lock`) holds, and a pipeline writing to it
/// (until `stop`, in `task`) with 120 rows queued (three batches of up to 50), in paused time:
/// the writer's pauses, and the appender's waits for the lock, pass at once.
struct Refusing {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    lock: rusqlite::Connection,
    sink: UsageSink,
    task: tokio::task::JoinHandle<()>,
}

async fn refusing_store(stop: &CancellationToken) -> Refusing {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let lock = rusqlite::Connection::open(dir.path().join("beast.sqlite3")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    tokio::time::pause();
    let (sink, writer) = small_pipeline(1000);
    for _ in 0..120 {
        sink.room(1).await.unwrap().record(event(1, 200));
    }
    let task = tokio::spawn(writer.run(store.clone(), stop.clone()));
    Refusing {
        _dir: dir,
        store,
        lock,
        sink,
        task,
    }
}

#[tokio::test]
async fn rows_wait_out_a_store_that_refuses_them_for_minutes_and_none_is_lost() {
    let stop = CancellationToken::new();
    let r = refusing_store(&stop).await;
    // Three minutes refused: a batch used to be given up after 8 tries, about 90 s.
    tokio::time::sleep(Duration::from_secs(180)).await;
    let stats = r.sink.stats().snapshot();
    assert_eq!((stats.written, stats.dropped), (0, 0), "{stats:?}");
    assert!(stats.write_retries > 8, "{stats:?}");
    r.lock.execute_batch("COMMIT").unwrap();
    stop.cancel();
    r.task.await.unwrap();
    let stats = r.sink.stats().snapshot();
    assert_eq!((stats.written, stats.dropped), (120, 0), "{stats:?}");
    // The pool times its waits: in real time again.
    tokio::time::resume();
    assert_eq!(r.store.usage_count().await.unwrap(), 120);
}

#[tokio::test]
async fn a_stopping_writer_gives_up_what_the_store_still_refuses_after_one_batchs_tries() {
    let stop = CancellationToken::new();
    stop.cancel();
    let r = refusing_store(&stop).await;
    r.task.await.unwrap();
    let stats = r.sink.stats().snapshot();
    assert_eq!((stats.written, stats.dropped), (0, 120), "{stats:?}");
    assert_eq!(stats.write_retries, 7, "8 tries, for the first batch only");
}

#[tokio::test]
async fn a_stop_while_a_batch_is_retried_takes_that_batchs_last_tries_only() {
    let stop = CancellationToken::new();
    let r = refusing_store(&stop).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let before = r.sink.stats().snapshot().write_retries;
    assert!(before > 0, "the first batch is being retried");
    stop.cancel();
    r.task.await.unwrap();
    let stats = r.sink.stats().snapshot();
    assert_eq!((stats.written, stats.dropped), (0, 120), "{stats:?}");
    assert_eq!(
        stats.write_retries - before,
        7,
        "8 tries after the stop, in all"
    );
}

#[tokio::test]
async fn stopping_drains_what_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let (sink, writer) = pipeline(WriterOptions {
        capacity: 10_000,
        batch_size: 100,
        flush_interval: Duration::from_secs(3600),
    });
    for _ in 0..1234 {
        sink.room(1).await.unwrap().record(event(1, 200));
    }
    let stop = CancellationToken::new();
    stop.cancel();
    writer.run(store.clone(), stop).await;
    assert_eq!(store.usage_count().await.unwrap(), 1234);
}

#[tokio::test]
async fn depth_counts_the_events_waiting_for_the_writer() {
    let (sink, _writer) = small_pipeline(8);
    assert_eq!(sink.depth(), 0);
    for _ in 0..3 {
        sink.room(1).await.unwrap().record(event(1, 200));
    }
    assert_eq!(sink.depth(), 3);
}

#[tokio::test]
async fn a_request_given_up_while_waiting_for_room_has_queued_nothing() {
    let (sink, _writer) = small_pipeline(2);
    sink.room(2).await.unwrap().record(event(1, 200));
    // One of the two places taken is given back unused.
    assert_eq!(sink.depth(), 1);
    sink.room(1).await.unwrap().record(event(1, 200));
    let waiting = tokio::time::timeout(Duration::from_millis(20), sink.room(1)).await;
    assert!(
        waiting.is_err(),
        "the channel is full: the room is waited for"
    );
    let stats = sink.stats().snapshot();
    assert_eq!(
        (stats.queued, stats.backpressured, stats.dropped),
        (2, 1, 0)
    );
    assert_eq!(sink.depth(), 2);
}

#[tokio::test]
async fn room_partly_had_when_its_request_is_given_up_is_all_given_back() {
    let (sink, _writer) = small_pipeline(3);
    sink.room(1).await.unwrap().record(event(1, 200));
    // Two places are free, three are asked for: given up, the two are free again.
    let waiting = tokio::time::timeout(Duration::from_millis(20), sink.room(3)).await;
    assert!(waiting.is_err());
    let mut room = tokio::time::timeout(Duration::from_millis(20), sink.room(2))
        .await
        .expect("two places are free")
        .unwrap();
    room.record(event(1, 200));
    room.record(event(1, 200));
    assert_eq!(sink.depth(), 3);
    assert_eq!(sink.stats().snapshot().dropped, 0);
}

#[tokio::test]
async fn events_past_the_room_taken_are_counted_as_dropped() {
    let (sink, _writer) = small_pipeline(3);
    // Room for more than the channel holds is room for all it holds.
    let mut room = sink.room(5).await.unwrap();
    for _ in 0..4 {
        room.record(event(1, 200));
    }
    drop(room);
    let stats = sink.stats().snapshot();
    assert_eq!((stats.queued, stats.dropped), (4, 1), "each submitted");
    assert_eq!(sink.depth(), 3);
}

#[tokio::test]
async fn once_the_writer_has_stopped_there_is_no_room() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let (sink, writer) = small_pipeline(2);
    let mut room = sink.room(2).await.unwrap();
    room.record(event(1, 200));
    room.record(event(1, 200));
    let waiting = tokio::spawn({
        let sink = sink.clone();
        async move { sink.room(1).await.is_none() }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !waiting.is_finished(),
        "the channel is full: the room is waited for"
    );
    let stop = CancellationToken::new();
    stop.cancel();
    writer.run(store.clone(), stop).await;
    assert!(
        waiting.await.unwrap(),
        "a request still waiting gets no room"
    );
    assert!(sink.room(1).await.is_none(), "nor does a later one");
    assert_eq!(store.usage_count().await.unwrap(), 2);
    let stats = sink.stats().snapshot();
    assert_eq!((stats.queued, stats.written, stats.dropped), (2, 2, 0));
}
