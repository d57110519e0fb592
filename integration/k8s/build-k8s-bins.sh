#!/usr/bin/env bash
# Build kube-apiserver, kubectl (k8s.io/kubernetes) and etcd from the Go module
# proxy only, into a version-keyed cache dir. Idempotent: skips if present.
# edgelb's integration tests run the CCM against these (integration/k8s).
# Usage: build-k8s-bins.sh [outdir]
#   env: K8S_VERSION (default v1.36.3), ETCD_VERSION (default v3.6.8), WITH_KUBECTL=1
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.8}
WITH_KUBECTL=${WITH_KUBECTL:-1}
OUT=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/k8s-test-bins/k8s-$K8S_VERSION-etcd-$ETCD_VERSION}
STG=v0.${K8S_VERSION#v1.}            # v1.36.3 -> v0.36.3 (staging module versions)
GO=${GO:-go}
need=(kube-apiserver etcd); [ "$WITH_KUBECTL" = 1 ] && need+=(kubectl)
missing=0; for b in "${need[@]}"; do [ -x "$OUT/$b" ] || missing=1; done
if [ $missing = 0 ]; then echo "$OUT"; exit 0; fi
mkdir -p "$OUT"
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
export GOFLAGS="${GOFLAGS:-} -mod=mod" GOWORK=off

# ---- kube-apiserver (+kubectl): wrapper module pinning every staging repo
mkdir "$W/kube" && cd "$W/kube"
modjson=$($GO mod download -json "k8s.io/kubernetes@$K8S_VERSION")
gomod=$(printf '%s' "$modjson" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
goline=$(grep -m1 '^go ' "$gomod")
{
  echo "module local/kubebuild"; echo; echo "$goline"; echo
  echo "require k8s.io/kubernetes $K8S_VERSION"; echo; echo "replace ("
  grep -E '^[[:space:]]*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" |
    awk -v v="$STG" '{print "\t" $1 " => " $1 " " v}'
  echo ")"
} > go.mod
pkgs=(k8s.io/kubernetes/cmd/kube-apiserver); [ "$WITH_KUBECTL" = 1 ] && pkgs+=(k8s.io/kubernetes/cmd/kubectl)
{ echo "//go:build tools"; echo; echo "package tools"; echo; for p in "${pkgs[@]}"; do echo "import _ \"$p\""; done; } > tools.go
$GO mod tidy
maj=${K8S_VERSION#v}; maj=${maj%%.*}; min=${K8S_VERSION#v*.}; min=${min%%.*}
LDF="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=$maj -X k8s.io/component-base/version.gitMinor=$min -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
for p in "${pkgs[@]}"; do
  $GO build -trimpath -ldflags "$LDF" -o "$OUT/.$(basename $p).tmp" "$p"
  mv "$OUT/.$(basename $p).tmp" "$OUT/$(basename $p)"
done

# ---- etcd: server/v3 is package main; `go install` refuses it (replace dirs), wrapper works
mkdir "$W/etcd" && cd "$W/etcd"
printf 'module local/etcdbuild\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > go.mod
printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
$GO mod tidy
$GO build -trimpath -ldflags "-s -w" -o "$OUT/.etcd.tmp" go.etcd.io/etcd/server/v3
mv "$OUT/.etcd.tmp" "$OUT/etcd"
echo "$OUT"
