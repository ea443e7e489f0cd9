#!/usr/bin/env bash
# Installs the Debian packages tally builds, runs and tests with. Idempotent:
# does nothing when every package is already installed.
set -euo pipefail
PKGS=(build-essential cmake pkg-config
      libh2o-evloop-dev libssl-dev libsqlite3-dev libjansson-dev libinih-dev
      libzstd-dev libxxhash-dev libcmocka-dev libcurl4-openssl-dev libnats-dev libpq-dev
      curl zstd)
if [ "${1:-}" = "--test" ]; then
  PKGS+=(nginx-light wrk jq postgresql nats-server python3 openssl sqlite3 nodejs clang-format)
  # bench/batch-vs-duckdb.sh installs DuckDB with npm; NodeSource's nodejs ships its own
  command -v npm >/dev/null || PKGS+=(npm)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
