#!/usr/bin/env bash
# User-space instructions per forwarded request, counted by valgrind
# (callgrind), for nginx and HAProxy as reverse proxies and for safedelete with the audit
# of passthrough requests on and off. Unlike req/s and CPU time, instruction
# counts do not drift with the VM's speed, so this is the figure to compare
# between commits. Kernel work (the loopback TCP stack) is not counted.
#
# Each proxy runs under callgrind twice, serving N1 and then N2 sequential
# requests on one keep-alive connection (curl); the difference divided by
# N2 - N1 removes start-up and shutdown. Under valgrind the gateway runs ~50x
# slower, so the audit writer commits batches of a few records instead of
# hundreds: the audit-on figure includes more per-commit work than under load.
#
# Usage: bench/instructions.sh   (N1=1000 N2=3000 by default)
#        SAFEDELETE_BIN=path/to/old/safedelete bench/instructions.sh   to measure another build
# Installs nginx, HAProxy and valgrind from Debian when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
N1=${N1:-1000}
N2=${N2:-3000}

need() { command -v "$1" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nginx haproxy valgrind curl >/dev/null; }; }
need nginx; need haproxy; need valgrind; need curl
if [ -z "${SAFEDELETE_BIN:-}" ]; then
  cargo build --release --locked --bin safedelete >/dev/null
  SAFEDELETE_BIN=target/release/safedelete
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$WORK"; }
trap cleanup EXIT

UP=127.0.0.1:19190; NGX=127.0.0.1:19191; HAP=127.0.0.1:19192; SD=127.0.0.1:19193; SDA=127.0.0.1:19194
PATH_Q="/api/v1/campaigns/101?api_key=bench_key_0123456789"
# A port already in use would silently measure something else: refuse.
for a in "$UP" "$NGX" "$HAP" "$SD" "$SDA"; do
  if ss -ltnH "sport = :${a##*:}" | grep -q .; then
    echo "port ${a##*:} is already in use; stop whatever listens there first" >&2; exit 1
  fi
done

mkdir -p "$WORK/up" "$WORK/px"
cat > "$WORK/up/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/up/pid; error_log $WORK/up/error.log;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen $UP; location / { default_type application/json;
    return 200 '{"id":101,"name":"Cold Outreach Q1","status":"ACTIVE","client_id":null}'; } } }
CONF
# One process, no master: callgrind then counts the worker that does the work.
cat > "$WORK/px/nginx.conf" <<CONF
worker_processes 1; master_process off; daemon off; pid $WORK/px/pid; error_log $WORK/px/error.log;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  upstream up { server $UP; keepalive 16; }
  server { listen $NGX; location / { proxy_pass http://up; proxy_http_version 1.1;
    proxy_set_header Connection ""; proxy_set_header Host \$proxy_host; } } }
CONF
# One thread, as nginx's one process: the counts compare like for like.
cat > "$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
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
printf '[audit]\npassthrough = false\n' > "$WORK/noaudit.toml"
printf '[audit]\npassthrough = true\n' > "$WORK/audit.toml"

nginx -c "$WORK/up/nginx.conf" -p "$WORK/up" & PIDS+=($!)
sleep 0.3

# A curl config that sends n requests to addr over one connection.
requests() { # addr n
  local f="$WORK/curl-$1-$2"
  for _ in $(seq 1 "$2"); do printf 'url = "http://%s%s"\noutput = /dev/null\n' "$1" "$PATH_Q"; done > "$f"
  echo "$f"
}

wait_port() { # addr
  for _ in $(seq 1 150); do
    curl -s -o /dev/null "http://$1/" && return 0
    sleep 0.2
  done
  echo "nothing answers on $1" >&2; exit 1
}

# Total instructions of one proxy run serving n requests.
count() { # kind n
  local kind=$1 n=$2 out="$WORK/cg.out" pid
  rm -f "$out"; rm -rf "$WORK/sd"
  case $kind in
    nginx)
      valgrind --tool=callgrind --callgrind-out-file="$out" \
        nginx -c "$WORK/px/nginx.conf" -p "$WORK/px" >/dev/null 2>&1 & pid=$!
      wait_port "$NGX"; addr=$NGX ;;
    haproxy)
      valgrind --tool=callgrind --callgrind-out-file="$out" \
        haproxy -f "$WORK/haproxy.cfg" -db >/dev/null 2>&1 & pid=$!
      wait_port "$HAP"; addr=$HAP ;;
    safedelete|safedelete-noaudit)
      local cfg="$WORK/audit.toml"; [ "$kind" = safedelete-noaudit ] && cfg="$WORK/noaudit.toml"
      SAFEDELETE_UPSTREAM=http://$UP SAFEDELETE_LISTEN=$SD SAFEDELETE_ADMIN_LISTEN=$SDA \
        SAFEDELETE_DATABASE=$WORK/sd/safedelete.db SAFEDELETE_LOG=warn \
        valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$SAFEDELETE_BIN" serve --config "$cfg" >/dev/null 2>&1 & pid=$!
      wait_port "$SDA"; addr=$SD ;;
  esac
  PIDS+=("$pid")
  curl -s -K "$(requests "$addr" "$n")"
  # The probe request of wait_port is one more; it is in both runs alike.
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  awk '/^(summary|totals):/{print $2; exit}' "$out"
}

printf '%-20s %14s\n' target "instr/request"
declare -A PER
for kind in nginx haproxy safedelete-noaudit safedelete; do
  a=$(count "$kind" "$N1")
  b=$(count "$kind" "$N2")
  PER[$kind]=$(( (b - a) / (N2 - N1) ))
  printf '%-20s %14d\n' "$kind" "${PER[$kind]}"
done
echo
awk -v n="${PER[nginx]}" -v h="${PER[haproxy]}" -v s="${PER[safedelete]}" -v o="${PER[safedelete-noaudit]}" 'BEGIN {
  printf "safedelete vs nginx: %.2fx (audit off %.2fx); vs HAProxy: %.2fx (audit off %.2fx)\n", s/n, o/n, s/h, o/h
  printf "the audit adds %d instructions per request\n", s-o }'
