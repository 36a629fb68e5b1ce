#!/usr/bin/env bash
# Restore cost: the fake SmartLead with LEADS leads in campaign 101 (every
# 50th unsubscribed), a gateway (release build, `[policy] default = "allow"`)
# in front of it, campaign 101 deleted through the gateway (its snapshot
# taken), then `safedelete restore 1 --yes` against the fake with no rate
# limit. Reports the calls the restore made (its audit records), its wall
# time, leads per second, its peak RSS (`/usr/bin/time`, or VmHWM polled),
# and from the measured calls the time a real account would need at
# SmartLead's documented 60 requests a minute.
#
# Usage: bench/restore.sh             (LEADS=100000 by default)
# Needs Rust, curl and python3. Runs on 127.0.0.1:19110-19112 and stops by
# itself. The fake answers at once; a real SmartLead takes tens to hundreds of
# milliseconds a call, so the rate limit, not the restore, sets the pace.
set -euo pipefail
cd "$(dirname "$0")/.."
LEADS=${LEADS:-100000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
KEY=sl_test_key
UP=127.0.0.1:19110; SD=127.0.0.1:19111; SDA=127.0.0.1:19112
unset SAFEDELETE_LISTEN SAFEDELETE_ADMIN_LISTEN SAFEDELETE_UPSTREAM SAFEDELETE_DATABASE \
  SAFEDELETE_ADMIN_TOKEN SAFEDELETE_LOG SAFEDELETE_LOG_FORMAT SAFEDELETE_IDENTITY_MODE \
  SAFEDELETE_SMARTLEAD_API_KEY

echo "building (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)..." >&2
cargo build -q --release --locked --bin safedelete -p safedelete
cargo build -q --release --locked -p fake-smartlead
BIN_SD=$CARGO_TARGET_DIR/release/safedelete
BIN_FAKE=$CARGO_TARGET_DIR/release/fake-smartlead

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "restore.sh: $*" >&2; exit 1; }

wait_for() { # url
  for _ in $(seq 1 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done
  fail "nothing answers at $1"
}

"$BIN_FAKE" --listen "$UP" --leads "$LEADS" > "$WORK/fake.log" 2>&1 & PIDS+=($!)
wait_for "http://$UP/api/v1/campaigns?api_key=$KEY"
cat > "$WORK/gw.toml" <<EOF
listen = "$SD"
[admin]
listen = "$SDA"
[upstream]
url = "http://$UP"
[database]
path = "$WORK/data/safedelete.db"
[log]
filter = "warn"
[policy]
default = "allow"
EOF
"$BIN_SD" serve --config "$WORK/gw.toml" > "$WORK/gateway.log" 2>&1 & PIDS+=($!)
wait_for "http://$SDA/readyz"
curl -s -o /dev/null -X DELETE "http://$SD/api/v1/campaigns/101?api_key=$KEY"

# The restore itself, timed, with its peak RSS.
start=$(date +%s.%N)
SMARTLEAD_API_KEY=$KEY "$BIN_SD" restore 1 --yes --json --config "$WORK/gw.toml" \
  > "$WORK/restore.jsonl" 2> "$WORK/restore.err" &
RPID=$!
peak=0
while kill -0 "$RPID" 2>/dev/null; do
  v=$(awk '$1 == "VmHWM:" {print $2}' "/proc/$RPID/status" 2>/dev/null || echo 0)
  [ -n "$v" ] && [ "$v" -gt "$peak" ] && peak=$v
  sleep 0.02
done
wait "$RPID" || { cat "$WORK/restore.err" >&2; fail "the restore failed"; }
end=$(date +%s.%N)

calls=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(\"SELECT count(*) FROM audit_events WHERE operation = 'restore'\").fetchone()[0])" "$WORK/data/safedelete.db")
python3 - "$WORK/restore.jsonl" "$start" "$end" "$calls" "$peak" "$LEADS" <<'PY'
import json, sys
path, start, end, calls, peak, leads = sys.argv[1:]
wall = float(end) - float(start)
report = json.loads(open(path).read().strip().splitlines()[-1])
sent = report["leads"]["sent"]
added = report["leads"]["added"]
calls = int(calls)
print(f"leads in the campaign:     {int(leads):,}")
print(f"leads sent / added:        {sent:,} / {added:,} (left out: {report['leads']['left_out']})")
print(f"calls to SmartLead:        {calls:,}")
print(f"wall time:                 {wall:.2f} s ({sent / wall:,.0f} leads/s, {calls / wall:,.0f} calls/s)")
print(f"peak RSS of the restore:   {int(peak) / 1024:.1f} MiB")
minutes = calls / 60
print(f"at 60 requests a minute:   {minutes:,.0f} minutes ({minutes / 60:.1f} hours) for these {calls:,} calls")
PY
