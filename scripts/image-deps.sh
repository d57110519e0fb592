#!/usr/bin/env bash
# Installs the OCI tools the image test (EDGELB_IMAGES=1 go test ./packaging/images,
# a stage of scripts/test.sh) loads and unpacks `make images`' archives with:
# skopeo (copy, inspect), umoci (unpack to a root filesystem) and docker-registry
# (the distribution registry, run on loopback as the push target), from Debian.
# Idempotent: quick (no apt) when all are present. Needs root to install.
set -euo pipefail

# shellcheck source=lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"
apt_ensure image-deps skopeo umoci docker-registry
