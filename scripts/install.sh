#!/usr/bin/env bash
# Installs approval-gate as a systemd service, idempotently: the binary to /usr/local/bin, a
# dedicated system user, the configuration under /etc/approval-gate (existing files are kept),
# the unit, then reloads systemd. Run from a checkout after `cargo build --release`.
# DESTDIR=/some/root installs into a staging root (no user, no systemctl): for packaging and tests.
set -euo pipefail
cd "$(dirname "$0")/.."
root="${DESTDIR:-}"
binary="target/release/approval-gate"
[ -x "$binary" ] || { echo "build first: cargo build --release" >&2; exit 1; }

install -d "$root/usr/local/bin" "$root/etc/approval-gate" "$root/etc/systemd/system" "$root/var/lib/approval-gate"
install -m 0755 "$binary" "$root/usr/local/bin/approval-gate"
for file in default.toml production.toml policy.example.toml; do
  # Never overwrite an operator's edits.
  [ -e "$root/etc/approval-gate/$file" ] || install -m 0644 "config/$file" "$root/etc/approval-gate/$file"
done
if [ ! -e "$root/etc/approval-gate/env" ]; then
  install -m 0600 /dev/null "$root/etc/approval-gate/env"
  echo "# APPROVAL_GATE__AUTH__OPERATOR_TOKENS__ALICE=file:/etc/approval-gate/alice.token" >"$root/etc/approval-gate/env"
fi
install -m 0644 scripts/approval-gate.service "$root/etc/systemd/system/approval-gate.service"

if [ -z "$root" ]; then
  id approval-gate >/dev/null 2>&1 || useradd --system --home /var/lib/approval-gate --shell /usr/sbin/nologin approval-gate
  chown approval-gate:approval-gate /var/lib/approval-gate
  chgrp approval-gate /etc/approval-gate/env
  chmod 0640 /etc/approval-gate/env
  systemctl daemon-reload
  echo "installed; configure /etc/approval-gate/env, then: systemctl enable --now approval-gate"
else
  echo "staged under $root"
fi
