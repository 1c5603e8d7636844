#!/usr/bin/env bash
# Runs the whole test suite against a real Kafka broker and milvus-lite server.
# Installs what is missing, starts the local services (unless VITRINE_KAFKA_BOOTSTRAP /
# VITRINE_MILVUS_URI point at existing ones), runs pytest, and stops what it started.
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow" -x
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh dev,train
export HF_HUB_OFFLINE=1

.venv/bin/vitrine infra up
trap '.venv/bin/vitrine infra down' EXIT
.venv/bin/vitrine topics create >/dev/null
.venv/bin/python -m pytest "$@"
