#!/usr/bin/env bash
# The README's test command (make test). Everything CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== proto: buf lint, generate, breaking"
bash scripts/proto.sh check
echo "== go vet"
go vet ./...
echo "== go test ./..."
go test ./...
