#!/usr/bin/env bash
# deb.sh [OUTDIR] — build the edgelb .deb (lbd, lbctl, the cloud-controller-
# manager, the systemd unit, an example config) into OUTDIR (default dist/).
# nfpm is pinned and built through the Go module proxy into the tools cache,
# like the other tools (scripts/tools.sh). Prints the path of the .deb.
#
#   VERSION  package version (default: from git, e.g. 0.0.0~git20261124.1d22f65)
#   ARCH     Debian architecture (default: GOARCH of this Go, amd64 → amd64, arm64 → arm64)
set -euo pipefail
cd "$(dirname "$0")/.."
NFPM_VERSION=v2.44.1 # newer releases need modules the proxy does not serve here (go.digitalxero.dev)
CACHE=${EDGELB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgelb}
BIN=$CACHE/tools/bin
mkdir -p "$BIN"
stamp=$BIN/.nfpm.version
if [ ! -x "$BIN/nfpm" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$NFPM_VERSION" ]; then
  (cd / && GOBIN=$BIN GOFLAGS=-mod=mod go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION") >&2
  echo "$NFPM_VERSION" >"$stamp"
fi

OUT=${1:-dist}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ARCH=${ARCH:-$(go env GOARCH)}
if [ -z "${VERSION:-}" ]; then
  if desc=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
    VERSION=${desc#v}
    VERSION=${VERSION//-/\~}
  else
    VERSION="0.0.0~git$(git log -1 --format=%cd --date=format:%Y%m%d 2>/dev/null || date +%Y%m%d).$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  fi
fi
DIST=$(mktemp -d)
trap 'rm -rf "$DIST"' EXIT
ldflags="-s -w -X github.com/edgelb/edgelb/lbd/daemon.Version=$VERSION -X github.com/edgelb/edgelb/lbctl/cli.Version=$VERSION"
CGO_ENABLED=0 GOOS=linux GOARCH=$ARCH go build -trimpath -ldflags "$ldflags" -o "$DIST/" ./lbd ./lbctl ./cloudprovider/cmd/edgelb-cloud-controller-manager >&2
export VERSION ARCH
# nfpm expands ${VERSION} and ${ARCH} itself, but not paths in contents: render ${DIST}.
sed "s#\${DIST}#$DIST#g" packaging/nfpm.yaml >"$DIST/nfpm.yaml"
"$BIN/nfpm" package --config "$DIST/nfpm.yaml" --packager deb --target "$OUT/" >&2
deb=$(ls -t "$OUT"/edgelb_*"_$ARCH.deb" | head -1)
echo "$deb"
