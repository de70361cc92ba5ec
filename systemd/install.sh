#!/usr/bin/env bash
# Install llmproxy as a systemd service (run as root from the repository):
#   the release binary to /usr/local/bin, the config to /etc/llmproxy (kept if present), a secrets
#   file /etc/llmproxy/llmproxy.env (0600), a dedicated system user, and the unit; then enable it.
# Usage: systemd/install.sh [--no-start]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps
cargo build --release --bin llmproxy
install -m 0755 target/release/llmproxy /usr/local/bin/llmproxy
id llmproxy >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /var/lib/llmproxy --shell /usr/sbin/nologin llmproxy
install -d -m 0755 /etc/llmproxy
[ -f /etc/llmproxy/llmproxy.yaml ] || install -m 0644 conf/llmproxy.yaml /etc/llmproxy/llmproxy.yaml
if [ ! -f /etc/llmproxy/llmproxy.env ]; then
  install -m 0600 /dev/null /etc/llmproxy/llmproxy.env
  echo "# OPENAI_API_KEY=sk-..." >> /etc/llmproxy/llmproxy.env
fi
install -d -m 0755 /usr/local/share/doc/llmproxy
install -m 0644 README.md /usr/local/share/doc/llmproxy/README.md
/usr/local/bin/llmproxy check -c /etc/llmproxy/llmproxy.yaml
install -m 0644 systemd/llmproxy.service /etc/systemd/system/llmproxy.service
systemd-analyze verify /etc/systemd/system/llmproxy.service
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable llmproxy.service
  [ "${1:-}" = "--no-start" ] || systemctl restart llmproxy.service
else
  echo "systemd is not running here: unit installed, not started"
fi
