#!/usr/bin/env bash
# Sourced by scripts/uml-deps.sh and scripts/image-deps.sh: one place that knows
# how to check for Debian packages and install the missing ones.
#
# apt_ensure TAG PKG...: returns at once (no apt) when every PKG is installed;
# otherwise installs the missing ones, or fails naming them when not root.
# TAG prefixes the messages (the calling script's name).
apt_ensure() {
  local tag=$1
  shift
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  if [[ $(id -u) -ne 0 ]]; then
    echo "$tag: missing packages: ${missing[*]}; run as root (or: sudo apt-get install -y ${missing[*]})" >&2
    return 1
  fi
  echo "$tag: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
