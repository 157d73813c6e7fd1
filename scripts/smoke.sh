#!/usr/bin/env bash
# Smoke test of a deployed instance: health, readiness, metrics, and a create-and-cancel round
# trip. Usage: scripts/smoke.sh URL   (tokens from APPROVAL_GATE_TOKEN and
# APPROVAL_GATE_OPERATOR_TOKEN when the instance has auth; metrics may need the operator token).
set -euo pipefail
url="${1:?usage: scripts/smoke.sh URL}"
url="${url%/}"
agent=(); operator=()
[ -n "${APPROVAL_GATE_TOKEN:-}" ] && agent=(-H "Authorization: Bearer $APPROVAL_GATE_TOKEN")
[ -n "${APPROVAL_GATE_OPERATOR_TOKEN:-}" ] && operator=(-H "Authorization: Bearer $APPROVAL_GATE_OPERATOR_TOKEN")
fail() { echo "FAIL: $*" >&2; exit 1; }

curl -sf "$url/health/live" >/dev/null || fail "/health/live"
curl -sf "$url/health/ready" >/dev/null || fail "/health/ready (not ready)"
health=$(curl -sf "$url/health") || fail "/health"
echo "health: $(echo "$health" | sed -E 's/.*"status":"([a-z]+)".*/\1/' | head -c 20)"
curl -sf "${operator[@]}" "$url/metrics" | grep -q '^approval_gate_pending_approvals' || fail "/metrics"
created=$(curl -sf "${agent[@]}" -X POST "$url/api/approvals" -H 'Content-Type: application/json' \
  -d '{"session_id":"smoke","tool_name":"smoke-test","tool_input":{},"reason":"scripts/smoke.sh","timeout":"1m"}') \
  || fail "create"
id=$(echo "$created" | sed -E 's/.*"id":"([0-9A-Z]+)".*/\1/')
[ -n "$id" ] || fail "no id in $created"
cancelled=$(curl -sf "${agent[@]}" -X DELETE "$url/api/approvals/$id") || fail "cancel"
echo "$cancelled" | grep -q '"status":"cancelled"' || fail "not cancelled: $cancelled"
echo "OK: $url is healthy, ready, scraped, and round-tripped approval $id"
