#!/usr/bin/env bash
# Builds the guest's User-Mode Linux kernel from Debian's linux-source-6.1, patched with
# integration/uml/patches/*.patch, with
# integration/uml/kernel.config merged over `make ARCH=um defconfig`: IPVS, netfilter,
# nftables (ip/ip6/inet, which Debian's linux.uml lacks), ipset, veth, bridge, dummy and
# namespaces all built in. Prints the kernel's path (integration/uml boots it).
#
# Cached by source version and fragment hash under $EDGELB_CACHE/uml-kernel/<ver>-<hash>/,
# so it builds once per change of either; quick (no apt, no make) on a hit. Needs root
# to install the source package when it is missing. A cold build takes tens of minutes
# on two cores (docs/DEVELOPING.md has the figure).
#
# Usage: scripts/uml-kernel.sh          build when missing; print the kernel's path
#        scripts/uml-kernel.sh --path   print where the kernel is or would be; build nothing
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
frag=$root/integration/uml/kernel.config
series=6.1
pkg=linux-source-$series
CACHE=${EDGELB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgelb}

# shellcheck source=lib/apt.sh
source "$here/lib/apt.sh"

# The key is the hash of the fragment and the patches (integration/uml/patches, applied
# in name order), so integration/uml (kernel.go) finds the kernel from what it embeds
# without running anything. A change to the steps below that changes what comes out
# must change the fragment too (its header says so).
# Byte order, as integration/uml's fs.Glob lists them, whatever the locale.
mapfile -t patches < <(printf '%s\n' "$root"/integration/uml/patches/*.patch | LC_ALL=C sort)
hash=$(cat "$frag" "${patches[@]}" | sha256sum | cut -c1-12)
if [[ ${1:-} == --path ]]; then
  ver=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null) ||
    { echo "uml-kernel: $pkg is not installed; run scripts/uml-kernel.sh (as root)" >&2; exit 1; }
  echo "$CACHE/uml-kernel/$ver-$hash/linux"
  exit 0
fi
apt_ensure uml-kernel "$pkg" make gcc flex bison bc xz-utils patch
ver=$(dpkg-query -W -f='${Version}' "$pkg")
dir=$CACHE/uml-kernel/$ver-$hash
kernel=$dir/linux
if [[ -x $kernel ]]; then
  echo "$kernel"
  exit 0
fi

tarball=/usr/src/$pkg.tar.xz
[[ -f $tarball ]] || { echo "uml-kernel: $tarball missing after installing $pkg" >&2; exit 1; }

mkdir -p "$CACHE/uml-kernel"
# One build at a time per cache entry (two test stages, or two engineers, may ask at once).
exec 9>"$CACHE/uml-kernel/.lock-$ver-$hash"
flock 9
if [[ -x $kernel ]]; then
  echo "$kernel"
  exit 0
fi

work=$(mktemp -d "$CACHE/uml-kernel/.build-$ver-$hash.XXXXXX")
trap 'rm -rf "$work"' EXIT
t0=$(date +%s)
echo "uml-kernel: building $pkg $ver with $(basename "$frag") (hash $hash) in $work" >&2
tar -xf "$tarball" -C "$work"
src=$work/$pkg
jobs=${EDGELB_KERNEL_JOBS:-$(nproc)}
(
  cd "$src"
  for p in "${patches[@]}"; do
    patch -p1 --batch --forward --fuzz=0 --quiet <"$p" || { echo "uml-kernel: $p does not apply to $pkg $ver" >&2; exit 1; }
  done
  make -s ARCH=um defconfig >/dev/null
  # -m: merge only; olddefconfig then fills what the fragment leaves open.
  scripts/kconfig/merge_config.sh -m .config "$frag" >/dev/null
  make -s ARCH=um olddefconfig >/dev/null
  # Every line of the fragment must have survived olddefconfig: a symbol the kernel
  # renamed, or one whose dependency is missing, is silently dropped otherwise.
  bad=0
  while IFS= read -r line; do
    [[ $line =~ ^CONFIG_[A-Z0-9_]+= ]] || continue
    sym=${line%%=*} want=${line#*=}
    if [[ $want == n ]]; then
      if grep -q "^$sym=" .config; then echo "uml-kernel: $sym should be unset, .config has $(grep "^$sym=" .config)" >&2; bad=1; fi
    elif ! grep -qxF "$sym=$want" .config; then
      echo "uml-kernel: $sym=$want requested, .config has: $(grep "^$sym=\|# $sym is not set" .config || echo nothing)" >&2
      bad=1
    fi
  done <"$frag"
  if ((bad)); then
    echo "uml-kernel: fix integration/uml/kernel.config (the lines above did not take)" >&2
    exit 1
  fi
  nice make -s ARCH=um -j"$jobs" linux >"$work/build.log" 2>&1 || { tail -50 "$work/build.log" >&2; exit 1; }
  strip -o linux.stripped linux
)
mkdir -p "$dir"
cp "$src/.config" "$dir/config"
# integration/uml checks the features a run wants against this list before booting.
cp "$src/modules.builtin" "$dir/modules.builtin"
cp "$src/linux.stripped" "$dir/linux.tmp"
mv "$dir/linux.tmp" "$kernel"
echo "uml-kernel: built $kernel in $(( $(date +%s) - t0 ))s (load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
echo "$kernel"
