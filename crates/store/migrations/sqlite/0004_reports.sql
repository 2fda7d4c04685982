-- Usage reports: daily rollups so summaries over months do not scan raw rows, the per-key
-- monthly report allowance, and the log of report requests themselves.

-- One row per UTC day and (key, asset, source, protocol, node, status): counts by cache tier,
-- latency sum and max, and a mergeable latency histogram ("value:count,..." pairs).
CREATE TABLE usage_daily (
    day_ms         INTEGER NOT NULL,
    key_id         INTEGER NOT NULL,
    asset          TEXT NOT NULL,
    source         TEXT NOT NULL,
    protocol       TEXT NOT NULL,
    node           TEXT NOT NULL,
    status         INTEGER NOT NULL,
    requests       INTEGER NOT NULL,
    memory         INTEGER NOT NULL,
    rest           INTEGER NOT NULL,
    latency_sum_us INTEGER NOT NULL,
    latency_max_us INTEGER NOT NULL,
    latency_sketch TEXT NOT NULL,
    PRIMARY KEY (day_ms, key_id, asset, source, protocol, node, status)
);
CREATE INDEX usage_daily_key_day ON usage_daily (key_id, day_ms);

-- Every day before `rolled_until_ms` is in usage_daily.
CREATE TABLE usage_rollup_state (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    rolled_until_ms INTEGER NOT NULL
);

-- Reports taken by a key in a month (`YYYY-MM`); a new month starts again from zero.
CREATE TABLE report_count (
    key_id        INTEGER PRIMARY KEY,
    month         TEXT NOT NULL,
    count         INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

-- Every report request, whatever its outcome (key_id NULL: the admin key).
CREATE TABLE report_usage_logs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms      INTEGER NOT NULL,
    key_id     INTEGER,
    report     TEXT NOT NULL,
    format     TEXT NOT NULL,
    protocol   TEXT NOT NULL,
    node       TEXT NOT NULL,
    status     INTEGER NOT NULL,
    latency_us INTEGER NOT NULL,
    rows       INTEGER NOT NULL,
    query      TEXT NOT NULL
);
CREATE INDEX report_usage_logs_ts ON report_usage_logs (ts_ms);
CREATE INDEX report_usage_logs_key_ts ON report_usage_logs (key_id, ts_ms);
