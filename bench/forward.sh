#!/usr/bin/env bash
# Forwarding overhead: one fast upstream (nginx serving a small JSON body) and,
# in the same run, interleaved rounds against: direct, nginx as a reverse
# proxy (2 workers, keep-alive upstream), HAProxy (2 threads), safedelete
# (release build, default config, audit on) and safedelete with the audit of
# passthrough requests off. Reports requests/s, p50/p99, errors, the proxy's
# CPU time per request (from /proc) and peak RSS, as medians of ROUNDS rounds,
# with ratios against nginx. Then:
#   - a fixed-rate run (oha -q RATE, latency corrected) for the latency each
#     proxy adds at moderate load;
#   - a run with 256 connections, after which peak RSS is read.
#
# Usage: bench/forward.sh   (ROUNDS=3 DURATION=8s CONNECTIONS=64 RATE=2000 by default)
#   BASELINE=/path/to/safedelete adds that binary (audit on) as "baseline",
#   so a change is measured against the code before it in the same run.
#   POSTGRES=postgres://USER@HOST:PORT/DB adds a gateway (audit on) whose
#   store is a new database on that server ("safedelete-pg", dropped at the
#   end), for its throughput and audit cost against SQLite's in the same run.
# Installs nginx, haproxy and wrk from Debian and oha from crates.io when
# missing. Everything runs on loopback and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
RATE=${RATE:-2000}
RATE_DURATION=${RATE_DURATION:-10s}

need() { command -v "$1" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nginx haproxy wrk >/dev/null; }; }
need nginx; need haproxy; need wrk
export PATH="$HOME/.cargo/bin:$PATH"
command -v oha >/dev/null 2>&1 || cargo install --locked oha >/dev/null
cargo build --release --locked --bin safedelete >/dev/null

WORK=$(mktemp -d)
PIDS=()
PG_DB=""
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$WORK"
  if [ -n "$PG_DB" ]; then psql -q "${POSTGRES%/*}/postgres" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" || true; fi
}
trap cleanup EXIT

UP=127.0.0.1:19090; NGX=127.0.0.1:19091; HAP=127.0.0.1:19092; SD=127.0.0.1:19093; SDA=127.0.0.1:19094
SDN=127.0.0.1:19095; SDNA=127.0.0.1:19096; SDB=127.0.0.1:19097; SDBA=127.0.0.1:19098
SDP=127.0.0.1:19099; SDPA=127.0.0.1:19100
BASELINE=${BASELINE:-}
POSTGRES=${POSTGRES:-}
PATH_Q="/api/v1/campaigns/101?api_key=bench_key_0123456789"
# A port already in use would silently measure something else: refuse.
for a in "$UP" "$NGX" "$HAP" "$SD" "$SDA" "$SDN" "$SDNA" "$SDB" "$SDBA" "$SDP" "$SDPA"; do
  if ss -ltnH "sport = :${a##*:}" | grep -q .; then
    echo "port ${a##*:} is already in use; stop whatever listens there first" >&2; exit 1
  fi
done

mkdir -p "$WORK/up" "$WORK/px"
cat > "$WORK/up/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/up/pid; error_log $WORK/up/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen $UP; location / { default_type application/json;
    return 200 '{"id":101,"name":"Cold Outreach Q1","status":"ACTIVE","client_id":null}'; } } }
CONF
cat > "$WORK/px/nginx.conf" <<CONF
worker_processes 2; daemon off; pid $WORK/px/pid; error_log $WORK/px/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream up { server $UP; keepalive 256; }
  server { listen $NGX; location / { proxy_pass http://up; proxy_http_version 1.1;
    proxy_set_header Connection ""; proxy_set_header Host \$proxy_host; } } }
CONF
cat > "$WORK/haproxy.cfg" <<CONF
global
  nbthread 2
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend f
  bind $HAP
  default_backend b
backend b
  http-reuse always
  server s1 $UP
CONF

nginx -c "$WORK/up/nginx.conf" -p "$WORK/up" & PIDS+=($!)
sleep 0.3
nginx -c "$WORK/px/nginx.conf" -p "$WORK/px" & NGX_PID=$!; PIDS+=($NGX_PID)
haproxy -f "$WORK/haproxy.cfg" -db >/dev/null 2>&1 & HAP_PID=$!; PIDS+=($HAP_PID)
SAFEDELETE_UPSTREAM=http://$UP SAFEDELETE_LISTEN=$SD SAFEDELETE_ADMIN_LISTEN=$SDA \
  SAFEDELETE_DATABASE=$WORK/sd/safedelete.db SAFEDELETE_LOG=warn \
  target/release/safedelete serve >/dev/null 2>&1 & SD_PID=$!; PIDS+=($SD_PID)
printf '[audit]\npassthrough = false\n' > "$WORK/noaudit.toml"
SAFEDELETE_UPSTREAM=http://$UP SAFEDELETE_LISTEN=$SDN SAFEDELETE_ADMIN_LISTEN=$SDNA \
  SAFEDELETE_DATABASE=$WORK/sdn/safedelete.db SAFEDELETE_LOG=warn \
  target/release/safedelete serve --config "$WORK/noaudit.toml" >/dev/null 2>&1 & SDN_PID=$!; PIDS+=($SDN_PID)
if [ -n "$BASELINE" ]; then
  SAFEDELETE_UPSTREAM=http://$UP SAFEDELETE_LISTEN=$SDB SAFEDELETE_ADMIN_LISTEN=$SDBA \
    SAFEDELETE_DATABASE=$WORK/sdb/safedelete.db SAFEDELETE_LOG=warn \
    "$BASELINE" serve >/dev/null 2>&1 & SDB_PID=$!; PIDS+=($SDB_PID)
fi
if [ -n "$POSTGRES" ]; then
  PG_DB=safedelete_bench_$$
  psql -q "${POSTGRES%/*}/postgres" -c "CREATE DATABASE $PG_DB"
  SAFEDELETE_UPSTREAM=http://$UP SAFEDELETE_LISTEN=$SDP SAFEDELETE_ADMIN_LISTEN=$SDPA \
    SAFEDELETE_DATABASE="${POSTGRES%/*}/$PG_DB" SAFEDELETE_LOG=warn \
    target/release/safedelete serve >/dev/null 2>&1 & SDP_PID=$!; PIDS+=($SDP_PID)
fi
sleep 1

# CPU time (utime+stime, clock ticks) of a process and all its threads/children.
cpu_ticks() {
  local total=0
  for p in "$@"; do
    for c in $p $(pgrep -P "$p" 2>/dev/null); do
      [ -r /proc/$c/stat ] && total=$((total + $(awk '{print $14+$15}' /proc/$c/stat)))
    done
  done
  echo $total
}
peak_kib() {
  local total=0
  for p in "$@"; do
    for c in $p $(pgrep -P "$p" 2>/dev/null); do
      [ -r /proc/$c/status ] && total=$((total + $(awk '/VmHWM/{print $2}' /proc/$c/status)))
    done
  done
  echo $total
}
HZ=$(getconf CLK_TCK)
# The server processes of the benchmark database's connections.
pg_pids() { psql -qAt "${POSTGRES%/*}/postgres" -c "SELECT pid FROM pg_stat_activity WHERE datname = '$PG_DB'"; }

run() { # name addr pids...
  local name=$1 addr=$2; shift 2
  local before; before=$(cpu_ticks "$@")
  local out; out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "http://$addr$PATH_Q")
  local after; after=$(cpu_ticks "$@")
  local rps p50 p99 reqs errs
  rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  p50=$(awk '$1=="50%"{print $2}' <<<"$out")
  p99=$(awk '$1=="99%"{print $2}' <<<"$out")
  reqs=$(awk '/requests in/{print $1}' <<<"$out")
  errs=$(awk '/Non-2xx|Socket errors/{n+=1} END{print n+0}' <<<"$out")
  local cpu_us=0
  if [ "$#" -gt 0 ] && [ "$reqs" -gt 0 ]; then
    cpu_us=$(python3 -c "print(round(($after-$before)/$HZ*1e6/$reqs, 2))")
  fi
  echo "$name $rps $p50 $p99 $errs $cpu_us"
}

RESULTS=$WORK/results.txt
for r in $(seq 1 "$ROUNDS"); do
  run direct "$UP" >> "$RESULTS"
  run nginx "$NGX" "$NGX_PID" >> "$RESULTS"
  run haproxy "$HAP" "$HAP_PID" >> "$RESULTS"
  run safedelete "$SD" "$SD_PID" >> "$RESULTS"
  run safedelete-noaudit "$SDN" "$SDN_PID" >> "$RESULTS"
  if [ -n "$BASELINE" ]; then run baseline "$SDB" "$SDB_PID" >> "$RESULTS"; fi
  # Its CPU counts the PostgreSQL server processes serving it too: with
  # SQLite, that work is in the gateway's own writer thread.
  if [ -n "$POSTGRES" ]; then run safedelete-pg "$SDP" "$SDP_PID" $(pg_pids) >> "$RESULTS"; fi
done

# Fixed rate: latency at moderate load, corrected for coordinated omission.
fixed_rate() { # name addr
  local out; out=$(oha --no-tui --output-format json -z "$RATE_DURATION" -q "$RATE" -c "$CONNECTIONS" \
    --latency-correction "http://$2$PATH_Q")
  python3 -c '
import json, sys
d = json.loads(sys.argv[2])
p = d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
errors = sum(v for k, v in codes.items() if not k.startswith("2")) + sum(d.get("errorDistribution", {}).values())
print("rate", sys.argv[1], d["summary"]["requestsPerSec"], p["p50"] * 1000, p["p99"] * 1000, errors)
' "$1" "$out"
}
for name in direct nginx haproxy safedelete safedelete-pg; do
  case $name in direct) a=$UP;; nginx) a=$NGX;; haproxy) a=$HAP;; safedelete) a=$SD;;
    safedelete-pg) [ -n "$POSTGRES" ] || continue; a=$SDP;; esac
  fixed_rate "$name" "$a" >> "$RESULTS"
done

# 256 connections, then the peak RSS of each proxy over the whole run.
for name in nginx haproxy safedelete baseline safedelete-pg; do
  case $name in nginx) a=$NGX;; haproxy) a=$HAP;; safedelete) a=$SD;; baseline) [ -n "$BASELINE" ] || continue; a=$SDB;;
    safedelete-pg) [ -n "$POSTGRES" ] || continue; a=$SDP;; esac
  wrk -t"$THREADS" -c256 -d"$DURATION" "http://$a$PATH_Q" >/dev/null
done
echo "peak_rss nginx $(peak_kib "$NGX_PID") haproxy $(peak_kib "$HAP_PID") safedelete $(peak_kib "$SD_PID") safedelete-noaudit $(peak_kib "$SDN_PID")${BASELINE:+ baseline $(peak_kib "$SDB_PID")}${POSTGRES:+ safedelete-pg $(peak_kib "$SDP_PID")}" >> "$RESULTS"

# A gateway that keeps up only by dropping audit records is not audited:
# every record must have been written (the queue drains within a second).
sleep 1
audit_counts() { # name admin_addr
  curl -s "http://$2/metrics" | awk -v n="$1" '
    /^safedelete_audit_written_total /{w=$2} /^safedelete_audit_dropped_total /{d=$2}
    END {print "audit", n, w+0, d+0}'
}
audit_counts safedelete "$SDA" >> "$RESULTS"
if [ -n "$BASELINE" ]; then audit_counts baseline "$SDBA" >> "$RESULTS"; fi
if [ -n "$POSTGRES" ]; then audit_counts safedelete-pg "$SDPA" >> "$RESULTS"; fi

python3 - "$RESULTS" <<'PY'
import statistics, sys
rows, rss, rate, audit = {}, {}, {}, {}
for line in open(sys.argv[1]):
    f = line.split()
    if f[0] == "audit":
        audit[f[1]] = (int(float(f[2])), int(float(f[3])))
        continue
    if f[0] == "peak_rss":
        rss = {f[i]: int(f[i + 1]) for i in range(1, len(f), 2)}
        continue
    if f[0] == "rate":
        rate[f[1]] = f[2:]
        continue
    rows.setdefault(f[0], []).append(f[1:])
def ms(v):
    return float(v[:-2]) if v.endswith("ms") else float(v[:-2]) / 1000 if v.endswith("us") else float(v[:-1]) * 1000
med = {}
for name, rs in rows.items():
    med[name] = dict(
        rps=statistics.median(float(r[0]) for r in rs),
        p50=statistics.median(ms(r[1]) for r in rs),
        p99=statistics.median(ms(r[2]) for r in rs),
        errors=sum(int(r[3]) for r in rs),
        cpu=statistics.median(float(r[4]) for r in rs),
    )
print(f"{'target':<19} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'CPU us/req':>10} {'peak RSS':>9} {'req/s vs nginx':>14}")
for name in ["direct", "nginx", "haproxy", "safedelete", "safedelete-noaudit", "baseline", "safedelete-pg"]:
    if name not in med:
        continue
    m = med[name]
    r = f"{rss[name] / 1024:.1f} MB" if name in rss else "-"
    ratio = m["rps"] / med["nginx"]["rps"]
    cpu = f"{m['cpu']:.1f}" if name != "direct" else "-"
    print(f"{name:<19} {m['rps']:>9.0f} {m['p50']:>7.2f} {m['p99']:>7.2f} {m['errors']:>6} {cpu:>10} {r:>9} {ratio:>14.2f}")
on, off = med["safedelete"], med["safedelete-noaudit"]
print(f"\naudit on vs off: {on['rps']:.0f} vs {off['rps']:.0f} req/s ({(1 - on['rps'] / off['rps']) * 100:.1f}% less), "
      f"{on['cpu']:.1f} vs {off['cpu']:.1f} CPU us/req")
print(f"\nratios (throughput: higher is better; p99 and CPU: lower is better):")
print(f"{'target':<19} {'req/s vs nginx':>14} {'vs HAProxy':>10} {'p99 vs nginx':>12} {'vs HAProxy':>10} {'CPU vs nginx':>12} {'vs HAProxy':>10}")
for name in ["safedelete", "safedelete-noaudit", "baseline", "safedelete-pg"]:
    if name not in med:
        continue
    m, n, h = med[name], med["nginx"], med["haproxy"]
    print(f"{name:<19} {m['rps'] / n['rps']:>14.2f} {m['rps'] / h['rps']:>10.2f} {m['p99'] / n['p99']:>12.2f} "
          f"{m['p99'] / h['p99']:>10.2f} {m['cpu'] / n['cpu']:>12.2f} {m['cpu'] / h['cpu']:>10.2f}")
if "safedelete-pg" in med:
    pg = med["safedelete-pg"]
    print(f"\nPostgreSQL vs SQLite store (both audit on): {pg['rps']:.0f} vs {on['rps']:.0f} req/s ({pg['rps'] / on['rps']:.2f}x), "
          f"{pg['cpu']:.1f} vs {on['cpu']:.1f} CPU us/req; audit cost on PostgreSQL {(1 - pg['rps'] / off['rps']) * 100:.1f}% "
          f"(SQLite {(1 - on['rps'] / off['rps']) * 100:.1f}%), p99 {pg['p99']:.2f} vs {on['p99']:.2f} ms")
if "baseline" in med:
    b = med["baseline"]
    print(f"\nsafedelete vs baseline (both audit on): {on['rps'] / b['rps']:.2f}x req/s, {on['cpu']:.1f} vs {b['cpu']:.1f} CPU us/req")
for name, (written, dropped) in audit.items():
    verdict = "every request recorded" if dropped == 0 else "RECORDS DROPPED: its audit-on figures do not count"
    print(f"audit records of {name}: {written} written, {dropped} dropped ({verdict})")
print(f"peak RSS after the 256-connection run (whole-run peak): " + ", ".join(f"{k} {v / 1024:.1f} MB" for k, v in rss.items()))
if rate:
    print(f"\nfixed rate (oha -q per run, latency corrected):")
    print(f"{'target':<19} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}")
    for name, (rps, p50, p99, errs) in rate.items():
        print(f"{name:<19} {float(rps):>9.0f} {float(p50):>7.2f} {float(p99):>7.2f} {errs:>6}")
PY
