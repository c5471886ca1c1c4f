#!/usr/bin/env bash
# The tests start a throwaway PostgreSQL cluster from the server binaries; install Debian's
# package when they are missing (needs root, as in CI).
set -euo pipefail
if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "PostgreSQL server binaries are missing; install Debian's 'postgresql' package." >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
