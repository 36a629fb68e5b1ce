#!/usr/bin/env bash
# The audit writer alone: CPU time of the writer thread per passthrough
# record, at a steady offered rate like the forwarding benchmark's, without
# the proxy, the load generator or the upstream on the same cores. This is
# the part of "audit on" that the forwarding run's audit cost comes from, and
# it moves much less between runs than req/s on a shared VM.
#
# Usage: bench/audit.sh   (RECORDS=200000 RATE=20000 ROUNDS=5 by default)
# Prints each round and the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS=${RECORDS:-200000}
RATE=${RATE:-20000}
ROUNDS=${ROUNDS:-5}

cargo build --quiet --release --locked --example audit_writer
BIN=target/release/examples/audit_writer

cpu=(); rate=()
for i in $(seq 1 "$ROUNDS"); do
  out=$("$BIN" "$RECORDS" "$RATE")
  c=$(awk '/^writer CPU/{print $3}' <<<"$out")
  r=$(awk '/^written /{print $2}' <<<"$out")
  printf 'round %d: %s us/record, %s records/s\n' "$i" "$c" "$r"
  cpu+=("$c"); rate+=("$r")
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
echo
echo "records per round   $RECORDS offered at $RATE/s"
echo "writer CPU          $(median "${cpu[@]}") us/record (median of $ROUNDS)"
echo "written             $(median "${rate[@]}") records/s"
