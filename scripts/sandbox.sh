#!/usr/bin/env bash
# The README's "run it" command (make sandbox): a three-host edgelb cluster with live
# traffic, inside a User-Mode Linux guest (real IPVS whatever the host kernel has).
#
#   scripts/sandbox.sh                       install deps (root), build, run until Ctrl-C
#   SANDBOX_DURATION=30 scripts/sandbox.sh   run 30 s; exit 0 only if traffic was balanced (CI)
#   SANDBOX_MODE=bgp scripts/sandbox.sh      BGP mode: a BIRD router, a bgp-pool VIP on every edge (ECMP)
#   scripts/sandbox.sh lbctl vip list        from another terminal: run a command inside the running sandbox
#   scripts/sandbox.sh ip netns exec edge1 ipvsadm -Ln
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SANDBOX_BIN:-bin}

if (($# > 0)); then
  # Commands for a running sandbox go through its exec bridge.
  [[ -x "$BIN/sandbox" ]] || { echo "no $BIN/sandbox: start the sandbox first (scripts/sandbox.sh)" >&2; exit 2; }
  exec "$BIN/sandbox" exec "$@"
fi

bash scripts/uml-deps.sh
mkdir -p "$BIN"
echo "sandbox: building lbd lbctl nodeserver probe sandbox into $BIN/" >&2
go build -o "$BIN/" ./lbd ./lbctl ./integration/cmd/nodeserver ./integration/cmd/probe ./integration/cmd/sandbox
exec "$BIN/sandbox" -bin "$BIN"
