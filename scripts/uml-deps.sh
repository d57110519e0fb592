#!/usr/bin/env bash
# Installs what the User-Mode Linux harness needs (integration/uml, scripts/sandbox.sh,
# scripts/e2e-uml.sh): the tools the guest runs (from the host's root, over hostfs),
# stress-ng for the loaded runs, and the guest kernel (scripts/uml-kernel.sh builds it
# once per kernel.config; Debian's linux.uml is not used: it has no nftables ip/inet).
# Idempotent: quick (no apt, no build) when everything is present. Needs root to install.
set -euo pipefail

# shellcheck source=lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"
# stress-ng: the load the guest scenarios are run beside to prove they hold on a
# busy machine (docs/OPERATIONS.md, "Failover timing"). bird2: the router of the
# BGP lab (integration/lab, Config.Router), run only inside the guest.
apt_ensure uml-deps kmod iproute2 ipvsadm iptables arping tcpdump curl stress-ng bird2
bash "$(dirname "${BASH_SOURCE[0]}")/uml-kernel.sh" >/dev/null
