#!/usr/bin/env bash
# The README's curl tour, run against a fresh store: start, create, long-poll, decide, restart.
# Usage: scripts/smoke.sh   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin approval-gate
dir=$(mktemp -d)
port=5399
export APPROVAL_GATE__SERVER__BIND=127.0.0.1:$port APPROVAL_GATE__STORE__PATH=$dir/store \
       APPROVAL_GATE__FALLBACK__FILE_PATH=$dir/notifications.jsonl APPROVAL_GATE__LOGGING__LEVEL=warn
start() { target/release/approval-gate serve >"$dir/log" 2>&1 & pid=$!;
          for _ in $(seq 100); do curl -fs "localhost:$port/health/ready" >/dev/null && return; sleep 0.1; done; echo "did not start"; exit 1; }
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
start
id=$(curl -fs -X POST "localhost:$port/api/approvals" -H 'Content-Type: application/json' \
     -d '{"session_id":"smoke","tool_name":"Bash","tool_input":{"command":"ls"},"timeout":"10m"}' | sed 's/.*"id":"\([^"]*\)".*/\1/')
echo "created $id"
curl -fs "localhost:$port/api/approvals/$id?wait=1s" | grep -q '"status":"pending"' && echo "long poll: still pending"
kill -TERM $pid; wait $pid; echo "SIGTERM: exit $?"
start
curl -fs -X POST "localhost:$port/api/approvals/$id/decision" -H 'Content-Type: application/json' \
     -d '{"decision":"approve"}' | grep -q '"status":"approved"' && echo "approved after restart"
grep -c '"event"' "$dir/notifications.jsonl" | xargs echo "notification lines:"
echo "smoke OK"
