#!/usr/bin/env bash
# make bench: every benchmark, one table (see integration/cmd/bench).
# Rows that boot a User-Mode Linux guest need root (packages via scripts/uml-deps.sh);
# BENCH_ARGS="-skip-guest" runs the host-only rows, BENCH_ARGS="-compare old.json" compares.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then bash scripts/uml-deps.sh; else BENCH_ARGS="-skip-guest ${BENCH_ARGS:-}"; fi
# The benchmark's Kubernetes row needs kube-apiserver and etcd, not kubectl
# (about a minute to build on a fresh machine); the test harness honours this too.
export WITH_KUBECTL=0
bash integration/k8s/build-k8s-bins.sh >/dev/null
mkdir -p .cache/bin
exec go run ./integration/cmd/bench -json "${BENCH_JSON:-bench-results.json}" ${BENCH_ARGS:-}
