#!/usr/bin/env bash
# Installs the project's Go tools at pinned versions into a cache that survives on
# this machine (EDGELB_CACHE, default ~/.cache/edgelb). Prints the bin directory.
# Idempotent: a tool already built at its pinned version is not rebuilt.
set -euo pipefail
CACHE=${EDGELB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgelb}
BIN=$CACHE/tools/bin
mkdir -p "$BIN"
tools=(
  "buf github.com/bufbuild/buf/cmd/buf@v1.75.0"
  "protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12"
  "protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2"
)
for t in "${tools[@]}"; do
  name=${t%% *}; pkg=${t#* }
  stamp=$BIN/.$name.version
  if [ -x "$BIN/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$pkg" ]; then continue; fi
  (cd / && GOBIN=$BIN GOFLAGS=-mod=mod go install "$pkg") >&2
  echo "$pkg" >"$stamp"
done
echo "$BIN"
