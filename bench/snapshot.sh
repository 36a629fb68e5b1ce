#!/usr/bin/env bash
# Snapshot cost: the fake SmartLead upstream with LEADS leads in campaign 101
# and the gateway (release build, `[policy] default = "allow"`, log level warn)
# in front of it. In each round, on a fresh database:
#   1. passthrough: the campaign's leads export downloaded through the gateway
#      with curl (GET /api/v1/campaigns/101/leads-export), the baseline;
#   2. a guarded DELETE /api/v1/campaigns/101, which reads the campaign,
#      snapshots its six parts (the same export, streamed into SQLite as zstd
#      chunks) and then forwards the delete.
# Reports the export size, the passthrough time and MB/s, the DELETE's wall
# time and the snapshot's own time (snapshot row created -> completed, from
# `safedelete snapshots show --json`) and MB/s, the gateway's RSS before and
# its peak during each phase, its CPU time, and the database growth (db+wal
# after a WAL checkpoint, and the compressed bytes stored). Checks that the
# stored leads_csv is byte-identical (size and SHA-256) to the passthrough
# download. Targets (issue 5): peak RSS increase <= 64 MiB during the
# snapshot; snapshot throughput >= 50% of the passthrough download.
#
# Usage: bench/snapshot.sh             (LEADS=500000 ROUNDS=1 by default;
#        RSS_POLL=1 to poll VmRSS even where clear_refs works;
#        POSTGRES=postgres://USER@HOST:PORT/DB to store in a new database on
#        that server each round instead of SQLite, dropped at the end)
# Needs only Rust, curl and python3. Everything runs on 127.0.0.1:19100-19102
# and stops by itself; with ROUNDS > 1 the figures are medians.
#
# Peak RSS: VmHWM is a lifetime peak, so it is reset before each phase by
# writing 5 to /proc/PID/clear_refs; where that is not possible, VmRSS is
# polled every 20 ms instead (which can miss short spikes).
# What limits these figures: the fake upstream, curl, the gateway and SQLite
# share the machine's cores (the "CPU time" line shows who used what). The
# fake generates the CSV on the fly, and that, not the gateway, bounds the
# passthrough download (the gateway forwards the bytes for very little CPU).
# The snapshot also hashes (SHA-256), counts CSV records, compresses (zstd)
# and commits every 1 MiB chunk (synchronous=FULL: one fsync per chunk), so
# on a small machine it competes with the fake for CPU, and it is sensitive
# to the disk the temp dir is on. The fake's CSV compresses far better than
# real exports would (~19x), so the stored size is optimistic.
# MB = 10^6 bytes; memory is in MiB (the RSS target is read as 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
LEADS=${LEADS:-500000}
ROUNDS=${ROUNDS:-1}
RSS_POLL=${RSS_POLL:-0}
# PIN=1: the fake on CPU 0, the gateway and curl on CPU 1, as if SmartLead
# ran on another machine (it does): the capture's CPU then does not come out
# of the upstream's share.
PIN=${PIN:-0}
POSTGRES=${POSTGRES:-}
PG_DBS=()
PIN_UP=""; PIN_GW=""
if [ "$PIN" = 1 ]; then PIN_UP="taskset -c 0"; PIN_GW="taskset -c 1"; fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
KEY=sl_test_key
CAMPAIGN=101
UP=127.0.0.1:19100; SD=127.0.0.1:19101; SDA=127.0.0.1:19102
# The config file must be the whole story: no SAFEDELETE_* override.
unset SAFEDELETE_LISTEN SAFEDELETE_ADMIN_LISTEN SAFEDELETE_UPSTREAM SAFEDELETE_DATABASE \
  SAFEDELETE_ADMIN_TOKEN SAFEDELETE_LOG SAFEDELETE_LOG_FORMAT

echo "building (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)..." >&2
cargo build -q --release --locked --bin safedelete -p safedelete
cargo build -q --release --locked -p fake-smartlead
BIN_SD=$CARGO_TARGET_DIR/release/safedelete
BIN_FAKE=$CARGO_TARGET_DIR/release/fake-smartlead

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$rc" -ne 0 ]; then
    for f in "$WORK"/r*/fake.log "$WORK"/r*/gateway.log; do
      [ -s "$f" ] && { echo "--- last lines of $f" >&2; tail -n 20 "$f" >&2; }
    done
  fi
  rm -rf "$WORK"
  for d in "${PG_DBS[@]}"; do
    psql -q "${POSTGRES%/*}/postgres" -c "DROP DATABASE IF EXISTS $d WITH (FORCE)" || true
  done
}
trap cleanup EXIT
fail() { echo "snapshot.sh: $*" >&2; exit 1; }

status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; } # pid VmRSS|VmHWM
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# Resets the process's VmHWM to its current RSS; fails if the kernel refuses
# or the reset did not take (then the caller polls instead).
reset_peak() {
  [ "$RSS_POLL" = 1 ] && return 1
  { echo 5 > "/proc/$1/clear_refs"; } 2>/dev/null || return 1
  local hwm rss
  hwm=$(status_kib "$1" VmHWM); rss=$(status_kib "$1" VmRSS)
  [ "$hwm" -le $((rss + 1024)) ]
}

# Samples VmRSS every 20 ms until killed, then writes the maximum (KiB) to $2.
poll_rss() {
  local pid=$1 out=$2 max=0 k v
  trap 'echo "$max" > "$out"; exit 0' TERM
  while [ -r "/proc/$pid/status" ]; do
    while read -r k v _; do
      if [ "$k" = VmRSS: ]; then [ "$v" -gt "$max" ] && max=$v; break; fi
    done < "/proc/$pid/status"
    sleep 0.02
  done
  echo "$max" > "$out"
}

# Phase bracketing: phase_start NAME; (work); phase_end NAME. Leaves the
# gateway's RSS before, peak RSS, CPU seconds, how the peak was measured, and
# the fake's CPU seconds in $R/NAME.phase.
phase_start() {
  local pid=$GW_PID name=$1
  echo "$(status_kib "$pid" VmRSS) $(cpu_ticks "$pid") $(cpu_ticks "$FAKE_PID")" > "$R/$name.start"
  if reset_peak "$pid"; then
    echo hwm > "$R/$name.method"
  else
    echo poll > "$R/$name.method"
    poll_rss "$pid" "$R/$name.poll" & echo $! > "$R/$name.poller"
  fi
}
phase_end() {
  local pid=$GW_PID name=$1 before ticks0 fake0 peak
  read -r before ticks0 fake0 < "$R/$name.start"
  if [ "$(cat "$R/$name.method")" = hwm ]; then
    peak=$(status_kib "$pid" VmHWM)
  else
    kill "$(cat "$R/$name.poller")"; wait "$(cat "$R/$name.poller")" 2>/dev/null || true
    peak=$(cat "$R/$name.poll")
  fi
  local cpu fake
  cpu=$(python3 -c "print(($(cpu_ticks "$pid")-$ticks0)/$HZ)")
  fake=$(python3 -c "print(($(cpu_ticks "$FAKE_PID")-$fake0)/$HZ)")
  echo "$before $peak $cpu $(cat "$R/$name.method") $fake" > "$R/$name.phase"
}

# Checkpoints the WAL (python's sqlite3, when it is there) and prints
# "db_bytes wal_bytes checkpointed(0/1)".
db_size() {
  if [ -n "$POSTGRES" ]; then
    echo "$(psql -qAt "$DB_URL" -c 'SELECT pg_database_size(current_database())') 0 1"
    return
  fi
  python3 - "$1" <<'PY'
import os, sys
db = sys.argv[1]
done = 0
try:
    import sqlite3
    con = sqlite3.connect(db, timeout=10)
    busy = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    con.close()
    done = 1 if busy == 0 else 0
except Exception:
    pass
size = lambda p: os.path.getsize(p) if os.path.exists(p) else 0
print(size(db), size(db + "-wal"), done)
PY
}

wait_http() { # url what seconds
  local i
  for i in $(seq 1 $(($3 * 10))); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)" = 200 ] && return 0
    sleep 0.1
  done
  fail "$2 did not answer 200 at $1 within $3 s"
}

RESULTS=$WORK/results.jsonl
for round in $(seq 1 "$ROUNDS"); do
  R=$WORK/r$round; mkdir -p "$R"
  echo "round $round/$ROUNDS: fake-smartlead with $LEADS leads, gateway with policy allow" >&2

  $PIN_UP "$BIN_FAKE" --listen "$UP" --leads "$LEADS" --api-key "$KEY" > "$R/fake.log" 2>&1 &
  FAKE_PID=$!; PIDS+=("$FAKE_PID")
  wait_http "http://$UP/api/v1/campaigns/$CAMPAIGN?api_key=$KEY" fake-smartlead 20

  if [ -n "$POSTGRES" ]; then
    PG_DB=safedelete_snap_$$_$round; PG_DBS+=("$PG_DB")
    psql -q "${POSTGRES%/*}/postgres" -c "CREATE DATABASE $PG_DB"
    DB_URL="${POSTGRES%/*}/$PG_DB"; DB_LINE="url = \"$DB_URL\""
  else
    DB_LINE="path = \"$R/db/safedelete.db\""
  fi
  cat > "$R/safedelete.toml" <<CONF
listen = "$SD"

[upstream]
url = "http://$UP"

[database]
$DB_LINE

[admin]
listen = "$SDA"

[policy]
default = "allow"

[log]
filter = "warn"
CONF
  "$BIN_SD" check-config --config "$R/safedelete.toml" > /dev/null
  $PIN_GW "$BIN_SD" serve --config "$R/safedelete.toml" > "$R/gateway.log" 2>&1 &
  GW_PID=$!; PIDS+=("$GW_PID")
  wait_http "http://$SDA/readyz" "the gateway's /readyz" 30
  # One small request so the upstream pool and the audit writer are warm.
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$SD/api/v1/campaigns/$CAMPAIGN?api_key=$KEY")" = 200 ] \
    || fail "GET campaign $CAMPAIGN through the gateway did not answer 200"
  sleep 0.5

  # 1. Passthrough download of the export.
  phase_start pass
  read -r pass_code pass_bytes pass_s < <($PIN_GW curl -sS -o "$R/export.csv" \
    -w '%{http_code} %{size_download} %{time_total}\n' \
    "http://$SD/api/v1/campaigns/$CAMPAIGN/leads-export?api_key=$KEY") || true
  phase_end pass
  [ "$pass_code" = 200 ] || fail "passthrough export answered $pass_code"
  pass_sha=$(python3 -c "import hashlib,sys; h=hashlib.sha256()
with open(sys.argv[1],'rb') as f:
    for b in iter(lambda: f.read(1<<20), b''): h.update(b)
print(h.hexdigest())" "$R/export.csv")
  rm -f "$R/export.csv"
  sleep 0.5

  # 2. The guarded DELETE.
  read -r db_before wal_before ckpt_before < <(db_size "$R/db/safedelete.db")
  phase_start del
  read -r del_code del_s < <($PIN_GW curl -sS -X DELETE -D "$R/del.headers" -o "$R/del.body" \
    -w '%{http_code} %{time_total}\n' "http://$SD/api/v1/campaigns/$CAMPAIGN?api_key=$KEY") || true
  phase_end del
  header() { awk -v h="$1:" 'tolower($1) == h {sub(/\r$/, "", $2); print $2}' "$R/del.headers"; }
  action=$(header x-safedelete-action); snap_id=$(header x-safedelete-snapshot-id)
  [ "$del_code" = 200 ] && [ "$action" = allowed ] && [ -n "$snap_id" ] \
    || fail "DELETE answered $del_code, x-safedelete-action '$action', snapshot id '$snap_id': $(head -c 400 "$R/del.body")"
  read -r db_after wal_after ckpt_after < <(db_size "$R/db/safedelete.db")
  "$BIN_SD" snapshots show "$snap_id" --json --config "$R/safedelete.toml" > "$R/snapshot.json"
  "$BIN_SD" history --campaign "$CAMPAIGN" --json --config "$R/safedelete.toml" > "$R/history.json"

  read -r pass_rss0 pass_peak pass_cpu pass_method pass_fake < "$R/pass.phase"
  read -r del_rss0 del_peak del_cpu del_method del_fake < "$R/del.phase"
  python3 - "$R" "$RESULTS" "$round" "$LEADS" <<PY
import json, sys
from datetime import datetime
R, out, rnd, leads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
snap = json.load(open(f"{R}/snapshot.json"))
hist = json.load(open(f"{R}/history.json"))
t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
parts = {p["kind"]: p for p in snap["parts"]}
csv = parts["leads_csv"]
op = next(o for o in hist["operations"] if o.get("snapshot_id") == snap["id"])
ok = snap["state"] == "complete" and all(p["state"] == "complete" for p in snap["parts"])
row = dict(
    round=rnd, snapshot_id=snap["id"], snapshot_complete=ok, op_state=op["state"],
    op_upstream=op.get("sent_upstream"),
    leads_expected=leads, leads=snap.get("leads"),
    csv_bytes=csv["bytes"], csv_stored=csv["stored_bytes"], csv_chunks=csv["chunks"],
    csv_sha=csv["sha256"], stored_total=sum(p["stored_bytes"] for p in snap["parts"]),
    bytes_total=sum(p["bytes"] for p in snap["parts"]),
    snap_s=t(snap["completed_at"]) - t(snap["created_at"]),
    before_snap_s=t(snap["created_at"]) - t(op["created_at"]),
    after_snap_s=t(op["updated_at"]) - t(snap["completed_at"]),
    pass_bytes=int("$pass_bytes"), pass_s=float("$pass_s"), pass_sha="$pass_sha",
    pass_rss0=int("$pass_rss0"), pass_peak=int("$pass_peak"), pass_cpu=float("$pass_cpu"),
    pass_method="$pass_method", pass_fake=float("$pass_fake"), del_fake=float("$del_fake"),
    del_s=float("$del_s"), del_rss0=int("$del_rss0"), del_peak=int("$del_peak"),
    del_cpu=float("$del_cpu"), del_method="$del_method",
    db_before=int("$db_before") + int("$wal_before"), db_after=int("$db_after") + int("$wal_after"),
    checkpointed=bool(int("$ckpt_before")) and bool(int("$ckpt_after")),
)
with open(out, "a") as f:
    f.write(json.dumps(row) + "\n")
PY

  kill "$GW_PID" "$FAKE_PID"; wait "$GW_PID" "$FAKE_PID" 2>/dev/null || true
  PIDS=()
done

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
MB, MiB = 1e6, 1024.0  # bytes per MB; KiB per MiB

bad = []
for r in rows:
    if not r["snapshot_complete"]:
        bad.append(f"round {r['round']}: snapshot {r['snapshot_id']} is not complete")
    if r["csv_bytes"] != r["pass_bytes"]:
        bad.append(f"round {r['round']}: leads_csv is {r['csv_bytes']} bytes, the passthrough download {r['pass_bytes']}")
    if r["csv_sha"] != r["pass_sha"]:
        bad.append(f"round {r['round']}: leads_csv SHA-256 differs from the passthrough download's")
    if r["leads"] != r["leads_expected"]:
        bad.append(f"round {r['round']}: snapshot holds {r['leads']} leads, expected {r['leads_expected']}")

med = lambda k: statistics.median(r[k] for r in rows)
for r in rows:
    r["pass_mbs"] = r["pass_bytes"] / MB / r["pass_s"]
    r["snap_mbs"] = r["csv_bytes"] / MB / r["snap_s"]
    r["del_mbs"] = r["csv_bytes"] / MB / r["del_s"]
    r["ratio"] = r["snap_mbs"] / r["pass_mbs"]
    r["pass_inc"] = (r["pass_peak"] - r["pass_rss0"]) / MiB
    r["del_inc"] = (r["del_peak"] - r["del_rss0"]) / MiB
    r["growth"] = (r["db_after"] - r["db_before"]) / MB

if len(rows) > 1:
    print(f"{'round':>5} {'pass s':>7} {'pass MB/s':>9} {'DELETE s':>8} {'snap s':>7} {'snap MB/s':>9} {'ratio':>5} {'RSS+ pass':>9} {'RSS+ snap':>9} {'db +MB':>7}")
    for r in rows:
        print(f"{r['round']:>5} {r['pass_s']:>7.2f} {r['pass_mbs']:>9.1f} {r['del_s']:>8.2f} {r['snap_s']:>7.2f} "
              f"{r['snap_mbs']:>9.1f} {r['ratio']:>5.2f} {r['pass_inc']:>8.1f}M {r['del_inc']:>8.1f}M {r['growth']:>7.1f}")
    print(f"(medians of {len(rows)} rounds below)")

r0 = rows[0]
pass_s, pass_mbs = med("pass_s"), med("pass_mbs")
snap_s, snap_mbs, del_s, ratio = med("snap_s"), med("snap_mbs"), med("del_s"), med("ratio")
pass_inc, del_inc = med("pass_inc"), med("del_inc")
method = {"hwm": "VmHWM reset via clear_refs", "poll": "VmRSS polled every 20 ms"}
methods = sorted({r["pass_method"] for r in rows} | {r["del_method"] for r in rows})
w = 26
print()
print(f"{'export (leads_csv)':<{w}}: {r0['csv_bytes'] / MB:.1f} MB, {r0['leads']} leads "
      f"(all six parts {r0['bytes_total'] / MB:.1f} MB)")
print(f"{'passthrough download':<{w}}: {pass_s:.2f} s, {pass_mbs:.1f} MB/s, gateway RSS "
      f"{med('pass_rss0') / MiB:.1f} MiB -> peak {med('pass_peak') / MiB:.1f} MiB ({pass_inc:+.1f} MiB)")
print(f"{'guarded DELETE (allow)':<{w}}: {del_s:.2f} s total ({med('del_mbs'):.1f} MB/s); "
      f"snapshot {snap_s:.2f} s, {snap_mbs:.1f} MB/s ({ratio:.2f}x passthrough), gateway RSS "
      f"{med('del_rss0') / MiB:.1f} MiB -> peak {med('del_peak') / MiB:.1f} MiB ({del_inc:+.1f} MiB)")
print(f"{'  DELETE breakdown':<{w}}: {med('before_snap_s'):.3f} s claim+read campaign, {snap_s:.3f} s snapshot, "
      f"{med('after_snap_s'):.3f} s upstream delete+record; operation {r0['op_state']}, {r0['op_upstream']}")
print(f"{'CPU time (gateway / fake)':<{w}}: passthrough {med('pass_cpu'):.2f} s / {med('pass_fake'):.2f} s; "
      f"DELETE {med('del_cpu'):.2f} s / {med('del_fake'):.2f} s")
print(f"{'database growth':<{w}}: {med('growth'):+.1f} MB (db+wal"
      f"{', after a WAL checkpoint' if all(r['checkpointed'] for r in rows) else ', no checkpoint'}), "
      f"stored compressed {med('stored_total') / MB:.1f} MB "
      f"(leads_csv {r0['csv_stored'] / MB:.1f} MB in {r0['csv_chunks']} chunks, "
      f"{r0['csv_bytes'] / max(r0['csv_stored'], 1):.1f}x)")
print(f"{'check':<{w}}: leads_csv {r0['csv_bytes']} bytes vs passthrough {r0['pass_bytes']} bytes, SHA-256 "
      + ("equal" if r0["csv_sha"] == r0["pass_sha"] else "DIFFERENT") + ": "
      + ("OK" if not bad else "FAILED"))
rss_ok, tp_ok = del_inc <= 64, ratio >= 0.5
print(f"{'targets':<{w}}: snapshot RSS increase <= 64 MiB: {'PASS' if rss_ok else 'FAIL'} ({del_inc:+.1f} MiB); "
      f"snapshot throughput >= 50% of passthrough: {'PASS' if tp_ok else 'FAIL'} ({ratio:.0%})")
print(f"{'peak RSS measured by':<{w}}: {', '.join(method[m] for m in methods)}")
if bad:
    for b in bad:
        print("snapshot.sh: CHECK FAILED: " + b, file=sys.stderr)
    sys.exit(1)
PY
