#!/usr/bin/env bash
# The main job end to end on the embedded defaults: installs what is missing, starts the local
# Kafka broker and milvus-lite server, creates the topics, and runs the demo.
# Options go to `vitrine demo` (see `.venv/bin/vitrine demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh dev,train
export HF_HUB_OFFLINE=1

.venv/bin/vitrine infra up
.venv/bin/vitrine topics create
if .venv/bin/vitrine demo --help >/dev/null 2>&1; then
  exec .venv/bin/vitrine demo "$@"
fi
echo "run: the demo command is not built yet; the broker and milvus-lite server are running."
echo "run: stop them with: .venv/bin/vitrine infra down"
