#!/usr/bin/env bash
# Real-kernel scenario tests (issue 3): installs the User-Mode Linux packages if
# missing, then runs integration/e2e in one UML guest. Extra arguments go to go test,
# e.g. scripts/e2e-uml.sh -run 'TestUML/ipv6'.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/uml-deps.sh
EDGELB_UML=1 go test ./integration/e2e/ -v -count=1 -timeout "${E2E_TIMEOUT:-20m}" "$@"
