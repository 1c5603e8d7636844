#!/usr/bin/env bash
# Installs what Vitrine needs on this machine, idempotently:
#   - Java 17+ and Maven (Debian packages) for the local Kafka broker, when missing;
#   - a Python virtual environment in .venv with the project and its extras.
# Usage: scripts/bootstrap.sh [EXTRAS]   (default extras: dev,train)
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1:-dev,train}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "bootstrap: Python 3.11 or newer is needed (found $("$python" --version 2>&1))" >&2
  exit 1
fi

java_major() {  # prints the major version of `java`, empty when there is none
  java -version 2>&1 | sed -n '1s/.*version "\([0-9]*\).*/\1/p'
}
need_apt=()
if ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ] 2>/dev/null; then
  need_apt+=(openjdk-17-jre-headless)
fi
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing ${need_apt[*]} (Debian packages)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    echo "bootstrap: please install ${need_apt[*]} (needed for the local Kafka broker)" >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $("$python" --version)"
  "$python" -m venv .venv
fi
# The stamp skips pip entirely when pyproject.toml has not changed since the last install.
stamp=".venv/.vitrine-installed-$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing vitrine[$extras] into .venv (first run downloads torch, a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$extras]"
  touch "$stamp"
fi
