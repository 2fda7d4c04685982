-- Live-prices slice: exchanges as data, tiers, keys, metering, parameters.

CREATE TABLE exchange_feeds (
    name                       TEXT PRIMARY KEY,
    source                     TEXT NOT NULL UNIQUE,
    enabled                    INTEGER NOT NULL DEFAULT 1,
    ws_url                     TEXT NOT NULL,
    subscribe_template         TEXT NOT NULL,
    symbol_template            TEXT NOT NULL,
    symbol_separator           TEXT NOT NULL,
    max_symbols_per_message    INTEGER NOT NULL,
    max_symbols_per_connection INTEGER NOT NULL,
    connect_delay_ms           INTEGER NOT NULL,
    "match"                    TEXT NOT NULL DEFAULT '{}',
    snapshot_match             TEXT NOT NULL DEFAULT '{}',
    items_path                 TEXT NOT NULL,
    symbol_path                TEXT NOT NULL,
    symbol_pattern             TEXT,
    price_path                 TEXT NOT NULL,
    size_path                  TEXT,
    time_path                  TEXT,
    trade_id_path              TEXT,
    time_format                TEXT NOT NULL,
    ping_interval_s            INTEGER NOT NULL,
    ping_payload               TEXT NOT NULL,
    heartbeat_match            TEXT NOT NULL DEFAULT '{}',
    heartbeat_reply            TEXT NOT NULL,
    liveness_timeout_s         INTEGER NOT NULL,
    rest_url                   TEXT NOT NULL,
    rest_price_path            TEXT NOT NULL,
    rest_time_path             TEXT NOT NULL,
    updated_at_ms              INTEGER NOT NULL
);

CREATE TABLE exchange_asset_map (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    exchange TEXT NOT NULL REFERENCES exchange_feeds(name) ON DELETE CASCADE,
    asset    TEXT NOT NULL,
    symbol   TEXT NOT NULL,
    quote    TEXT NOT NULL,
    enabled  INTEGER NOT NULL DEFAULT 1,
    prewarm  INTEGER NOT NULL DEFAULT 0,
    category TEXT NOT NULL DEFAULT '',
    UNIQUE (exchange, asset)
);

CREATE TABLE rate_limit_template (
    name                     TEXT PRIMARY KEY,
    requests_per_second      INTEGER NOT NULL,
    burst                    INTEGER NOT NULL,
    monthly_quota            INTEGER NOT NULL,
    reports_enabled          INTEGER NOT NULL,
    monthly_report_allowance INTEGER NOT NULL,
    unlimited                INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    key_hash      TEXT NOT NULL UNIQUE,
    key_prefix    TEXT NOT NULL,
    name          TEXT NOT NULL DEFAULT '',
    tier          TEXT NOT NULL REFERENCES rate_limit_template(name),
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER,
    updated_at_ms INTEGER NOT NULL,
    usage_month   TEXT NOT NULL DEFAULT '',
    usage_count   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE usage_logs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms      INTEGER NOT NULL,
    key_id     INTEGER NOT NULL,
    asset      TEXT NOT NULL,
    source     TEXT NOT NULL,
    protocol   TEXT NOT NULL,
    node       TEXT NOT NULL,
    status     INTEGER NOT NULL,
    latency_us INTEGER NOT NULL,
    cache_tier TEXT NOT NULL
);
CREATE INDEX usage_logs_ts ON usage_logs (ts_ms);
CREATE INDEX usage_logs_key_ts ON usage_logs (key_id, ts_ms);

CREATE TABLE application_parameters (
    name          TEXT PRIMARY KEY,
    value         TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    updated_at_ms INTEGER NOT NULL
);
