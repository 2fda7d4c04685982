#!/usr/bin/env bash
# Usage-report benchmark (issue 5): fills a fresh store with ROWS raw usage rows over 90 days
# (`beast generate-usage`, 50 keys, key 1 holding a tenth), then measures in one run:
#   - a 90-day summary for key 1 computed from raw rows (`beast report summary`, before any
#     rollup) — the baseline,
#   - `beast sync` (rolling up the 90 days),
#   - the same summary from rollups, directly and over HTTP from a running report node,
#   - a CSV export of all key 1's rows (ROWS/10) streamed over HTTP, with its row count checked.
# Medians over RUNS runs. Loopback only; everything started is stopped; the store is deleted
# unless KEEP=1. Environment: ROWS (default 10000000), RUNS (default 5), CARGO (default cargo).
set -euo pipefail
ROWS=${ROWS:-10000000}
RUNS=${RUNS:-5}
CARGO=${CARGO:-cargo}
cd "$(dirname "$0")/.."
log() { printf '== %s\n' "$*" >&2; }

log "building (release)"
$CARGO build --release -p beast
BIN=$PWD/target/release/beast

WORK=$(mktemp -d /tmp/beast-reports-bench.XXXXXX)
cleanup() {
    local rc=$?
    if [ "${KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$WORK/bench.py" <<'PY'
import json, os, statistics, subprocess, sys, time, urllib.request

BIN, WORK, ROWS, RUNS = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
DATA = os.path.join(WORK, "d")
DAY = 86_400_000

def timed(f):
    t = time.perf_counter(); out = f(); return time.perf_counter() - t, out

def run(*args, **kw):
    return subprocess.run([BIN, "--data-dir", DATA, *args], check=True, capture_output=True, **kw)

def median_of(f, n=RUNS):
    times, last = [], None
    for _ in range(n):
        t, last = timed(f)
        times.append(t)
    return statistics.median(times), times, last

t_gen, gen = timed(lambda: run("generate-usage", "--rows", str(ROWS), "--days", "90", "--keys", "50"))
key_id, key = gen.stdout.decode().splitlines()[0].split("\t")
size = os.path.getsize(os.path.join(DATA, "beast.sqlite3"))
print(f"generated {ROWS:,} rows in {t_gen:.1f} s ({ROWS / t_gen:,.0f} rows/s), store {size / 2**30:.2f} GiB")
frm = str(int(time.time() * 1000) - 90 * DAY)

summary = lambda: run("report", "summary", "--key-id", key_id, "--from", frm)
raw_t, raw_all, raw_out = median_of(summary, max(1, min(RUNS, 3)))
print(f"summary of key {key_id} over 90 days from raw rows: median {raw_t * 1000:.0f} ms {[round(t * 1000) for t in raw_all]}")

t_sync, out = timed(lambda: run("sync"))
print(f"beast sync: {t_sync:.1f} s — {out.stdout.decode().strip().splitlines()[0]}")

roll_t, roll_all, roll_out = median_of(summary)
same = json.loads(raw_out.stdout) == json.loads(roll_out.stdout)
print(f"same summary from rollups (CLI, incl. process start): median {roll_t * 1000:.0f} ms {[round(t * 1000) for t in roll_all]}; identical to raw: {same}")
print(f"ratio raw/rollup: {raw_t / roll_t:.1f}x")
if not same:
    sys.exit("the summary from rollups differs from the one from raw rows")

log = open(os.path.join(WORK, "node.log"), "w")
node = subprocess.Popen([BIN, "--data-dir", DATA, "serve", "--roles", "report", "--report-http", "127.0.0.1:0",
                         "--report-health", "127.0.0.1:0", "--report-udp", "127.0.0.1:0", "--log-format", "json"],
                        stdout=log, stderr=log)
import atexit
atexit.register(lambda: (node.terminate(), node.wait(timeout=30)))
addr = None
for _ in range(200):
    with open(os.path.join(WORK, "node.log")) as lines:
        for line in lines:
            try:
                v = json.loads(line)
            except ValueError:
                continue
            f = v.get("fields", v)
            if f.get("message") == "listening" and f.get("listener") == "report-http":
                addr = f["addr"]
    if addr:
        break
    time.sleep(0.05)
if not addr:
    sys.exit("the report node did not start")

def get(path):
    req = urllib.request.Request(f"http://{addr}{path}", headers={"Authorization": "Bearer " + key})
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.read()

# Generated keys are tier pro: 1000 reports a month, plenty for this run.
http_t, http_all, body = median_of(lambda: get(f"/reports/summary?from={frm}"))
print(f"HTTP /reports/summary key {key_id}, 90 days: median {http_t * 1000:.1f} ms {[round(t * 1000, 1) for t in http_all]}; "
      f"requests {json.loads(body)['total']['requests']:,}")

exp_runs = max(1, min(RUNS, 3))
csv_t, csv_all, body = median_of(lambda: get("/reports/usage?page_size=all&format=csv"), exp_runs)
lines = body.count(b"\r\n")
print(f"HTTP CSV export of key {key_id}: {lines - 1:,} rows, {len(body) / 2**20:.0f} MiB, median {csv_t:.2f} s "
      f"{[round(t, 2) for t in csv_all]} ({(lines - 1) / csv_t:,.0f} rows/s)")
heavy_rows = (ROWS + 9) // 10  # rows 0, 10, 20, ... belong to key 1
if lines - 1 != heavy_rows:
    sys.exit(f"expected {heavy_rows} rows")
PY
python3 "$WORK/bench.py" "$BIN" "$WORK" "$ROWS" "$RUNS"
