#!/usr/bin/env bash
# proto.sh generate | check
#   generate: buf generate with local, pinned plugins (no remote registry).
#   check:    buf lint; generated code matches the .proto files; buf breaking
#             against the previous commit (skipped when it has no proto/).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(bash scripts/tools.sh)
export PATH=$BIN:$PATH
case "${1:-check}" in
generate)
  buf generate
  ;;
check)
  buf lint
  echo "buf lint: ok"
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  buf generate -o "$tmp"
  if ! diff -r <(cd "$tmp/proto" && find . -name '*.go' | sort | xargs cat) \
               <(cd proto && find . -name '*.go' | sort | xargs cat) >/dev/null; then
    echo "generated code is stale: run 'make proto' and commit the result" >&2
    exit 1
  fi
  echo "buf generate: no diff"
  if git rev-parse -q --verify HEAD~1 >/dev/null && git cat-file -e HEAD~1:proto 2>/dev/null; then
    buf breaking --against ".git#ref=HEAD~1"
    echo "buf breaking against HEAD~1: ok"
  else
    echo "buf breaking: skipped (no previous commit with proto/)"
  fi
  ;;
*) echo "usage: $0 generate|check" >&2; exit 2 ;;
esac
