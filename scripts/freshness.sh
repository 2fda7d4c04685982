#!/usr/bin/env bash
# Measures, on the release binary against the simulator (loopback only), over RUNS runs:
# time from process start until every seeded prewarm asset answers fresh, the server's RSS
# then, and, after REQUESTS more requests, the time from SIGTERM to exit with every usage row
# flushed (rows are counted). Prints medians.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
REQUESTS=${REQUESTS:-2000}
cargo build --release --locked -q
exec python3 - "$RUNS" "$REQUESTS" <<'PY'
import json, os, re, signal, sqlite3, statistics, subprocess, sys, tempfile, time, urllib.request
runs, requests = int(sys.argv[1]), int(sys.argv[2])
BIN = "target/release/beast"
def get(url, key=None):
    req = urllib.request.Request(url, headers={"X-API-Key": key} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r: return r.status, json.load(r)
    except urllib.error.HTTPError as e: return e.code, json.load(e)
rows = []
for run in range(runs):
    data = tempfile.mkdtemp()
    key = subprocess.run([BIN, "--data-dir", data, "keys", "create", "--tier", "partner"], check=True, capture_output=True, text=True).stdout.split()[-1]
    t0 = time.monotonic()
    # Logs go to a file: a pipe nobody reads any more would fill up and block the node.
    log = open(os.path.join(data, "node.log"), "w")
    p = subprocess.Popen([BIN, "--data-dir", data, "serve", "--simulate", "--log-format", "json",
        "--price-http", "127.0.0.1:0", "--price-health", "127.0.0.1:0", "--price-udp", "127.0.0.1:0",
        "--report-http", "127.0.0.1:0", "--report-health", "127.0.0.1:0"], stderr=log)
    addr = None
    while addr is None and p.poll() is None:
        for line in open(os.path.join(data, "node.log")):
            m = re.search(r'"listener":"price-http","addr":"([^"]+)"', line) or re.search(r'"addr":"([^"]+)","listener":"price-http"', line)
            if m: addr = m.group(1)
        time.sleep(0.02)
    assert addr, "the node exited before listening"
    assets = [a["asset"] for a in get(f"http://{addr}/assets")[1]["assets"] if any(s["prewarm"] for s in a["sources"])]
    missing, asked_btc = set(assets), 0
    while missing and time.monotonic() - t0 < 30:
        for chunk in [sorted(missing)[i:i+100] for i in range(0, len(missing), 100)]:
            asked_btc += "BTC" in chunk
            missing -= set(get(f"http://{addr}/prices?assets={','.join(chunk)}", key)[1]["prices"])
        time.sleep(0.05)
    fresh_s = time.monotonic() - t0
    rss_mb = int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{p.pid}/status").read()).group(1)) / 1024
    for _ in range(requests): get(f"http://{addr}/price?asset=BTC", key)
    t2 = time.monotonic(); p.send_signal(signal.SIGTERM); code = p.wait(timeout=30); stop_s = time.monotonic() - t2
    db = sqlite3.connect(os.path.join(data, "beast.sqlite3"))
    btc = db.execute("SELECT COUNT(*) FROM usage_logs WHERE asset='BTC'").fetchone()[0]
    rows.append((fresh_s, rss_mb, stop_s))
    assert code == 0, f"exit code {code}"
    assert btc == requests + asked_btc, f"{btc} BTC usage rows for {requests + asked_btc} BTC answers"
    print(f"run {run+1}: {len(assets)} assets, all fresh after {fresh_s:.2f} s (missing {len(missing)}), RSS {rss_mb:.1f} MiB, "
          f"SIGTERM->exit {stop_s:.2f} s (code {code}), BTC usage rows {btc} for {requests + asked_btc} BTC answers")
med = [statistics.median(c) for c in zip(*rows)]
print(f"median of {runs}: all fresh {med[0]:.2f} s, RSS {med[1]:.1f} MiB, SIGTERM->exit {med[2]:.2f} s")
PY
