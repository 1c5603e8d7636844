#!/usr/bin/env bash
# Runs the whole test suite against a real Kafka broker and milvus-lite server, then the
# Milvus-touching integration tests again against a Milvus standalone server (the `milvus`
# package; VITRINE_MILVUS_KIND=server) started once for that pass.
# Installs what is missing, starts a private broker and milvus-lite server for this run (fresh
# data in a temporary VITRINE_HOME, on ports of their own so a running demo is not disturbed;
# the Kafka jars come from the shared download cache), runs pytest, and stops them.
# Set VITRINE_KAFKA_BOOTSTRAP / VITRINE_MILVUS_URI to test against existing services instead.
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow" -x
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh dev,train
export HF_HUB_OFFLINE=1

default_home="${XDG_CACHE_HOME:-$HOME/.cache}/vitrine"
export VITRINE_CACHE_DIR="${VITRINE_CACHE_DIR:-$default_home/cache}"
export VITRINE_KAFKA_PORT="${VITRINE_KAFKA_PORT:-19392}"
export VITRINE_KAFKA_CONTROLLER_PORT="${VITRINE_KAFKA_CONTROLLER_PORT:-19393}"
export VITRINE_MILVUS_PORT="${VITRINE_MILVUS_PORT:-19840}"
# Always a private home: `infra down` at the end stops what runs from VITRINE_HOME, and that
# must never be a demo's or a developer's services.
own_home="$(mktemp -d -t vitrine-test-XXXXXX)"
export VITRINE_HOME="$own_home"

cleanup() {
  .venv/bin/vitrine infra down || true
  rm -rf "$own_home"
}
trap cleanup EXIT
.venv/bin/vitrine infra up
.venv/bin/vitrine topics create >/dev/null
.venv/bin/python -m pytest "$@"

# Second pass: the same client code against a real Milvus server (HNSW, consistency levels,
# write tokens). Skipped when Milvus is external or VITRINE_SKIP_SERVER_PASS=1.
if [ -z "${VITRINE_MILVUS_URI:-}" ] && [ "${VITRINE_SKIP_SERVER_PASS:-0}" != 1 ]; then
  export VITRINE_MILVUS_KIND=server
  export VITRINE_MILVUS_PORT=$((VITRINE_MILVUS_PORT + 20))  # beside milvus-lite, not on it
  .venv/bin/vitrine infra up
  # The 20k-listing rollout runs on milvus-lite only (the 2k one runs on both).
  .venv/bin/python -m pytest -m integration \
    --deselect "tests/streams/rollout/test_rollout.py::test_rollout_bulk_kill_resume_cutover_rollback[20000]" \
    tests/recall tests/vitrine/test_vectorstore.py tests/vitrine/infra/test_milvus_server.py \
    tests/streams/rollout/test_commands.py tests/streams/rollout/test_rollout.py
fi
