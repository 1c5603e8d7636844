#!/usr/bin/env bash
# The main job end to end on the embedded defaults, in one command: installs what is missing,
# then `vitrine demo` starts the local Kafka broker and milvus-lite server (unless they already
# run or VITRINE_KAFKA_BOOTSTRAP / VITRINE_MILVUS_URI point elsewhere), builds the cpu model if
# it is not cached, creates the topics, starts the embedder and the recall worker, streams a
# synthetic marketplace, shows live figures and recall answers, stops what it started and prints
# a summary. Options go to `vitrine demo`, e.g. scripts/run.sh --duration 120 --rate 50
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh dev,train
export HF_HUB_OFFLINE=1
exec .venv/bin/vitrine demo "$@"
