#!/usr/bin/env bash
# Installs what the User-Mode Linux harness needs (integration/uml, scripts/sandbox.sh,
# scripts/e2e-uml.sh): the UML kernel and its modules, and the tools the guest runs.
# Idempotent: quick (no apt) when everything is present. Needs root to install.
set -euo pipefail

need=(user-mode-linux kmod iproute2 ipvsadm iptables arping tcpdump curl)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "uml-deps: missing packages: ${missing[*]}; run as root (or: sudo apt-get install -y ${missing[*]})" >&2
  exit 1
fi
echo "uml-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
