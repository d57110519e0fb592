#!/usr/bin/env bash
# proto.sh generate | check | breaking
#   generate: buf generate with local, pinned plugins (no remote registry).
#   check:    buf lint; generated code matches the .proto files; then breaking.
#   breaking: buf breaking against a baseline chosen so that a breaking change
#             cannot pass by being followed by another commit:
#     1. a release tag (v*) reachable from HEAD: the working tree against the
#        newest one — what was released is the contract;
#     2. on a branch (HEAD is not in main's history): the working tree against
#        the merge base with main (PROTO_MAIN, default: main, else origin/main),
#        i.e. the branch's net change, whatever number of commits follows it;
#     3. neither (on main before the first release, e.g. CI's clean clone of
#        main, where the merge base is HEAD itself): every first-parent commit
#        that changed proto/ against its first parent — the steps main took —
#        and the working tree against HEAD.
#     Rules 1 and 2 both apply when both baselines exist. A shallow clone fails:
#     the baseline would be missing, and a skipped check must not look green.
#     Tested by scripts/proto_test.go (a temp repo: break, commit, commit again).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(bash scripts/tools.sh)
export PATH=$BIN:$PATH
# gitinput REF: buf's input for commit REF of this repository (a worktree's
# objects live in the common git directory).
gitinput() { echo "$(git rev-parse --path-format=absolute --git-common-dir)#format=git,ref=$1"; }

# against REF [INPUT [LABEL]]: buf breaking of INPUT (default: the working tree)
# against commit REF; REFs without proto/ (before the API existed) have nothing
# to break.
against() {
  local ref=$1 input=${2:-.} label=${3:-}
  if ! git cat-file -e "$ref:proto" 2>/dev/null; then
    echo "buf breaking against $ref: skipped (no proto/ there)"; return
  fi
  buf breaking "$input" --against "$(gitinput "$(git rev-parse "$ref^{commit}")")"
  echo "buf breaking ${label:-working tree} against $ref: ok"
}

breaking() {
  if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
    echo "buf breaking: this clone is shallow, so its baseline may be missing; run 'git fetch --unshallow'" >&2
    exit 1
  fi
  local main="" tag base checked=0
  main=${PROTO_MAIN:-$(git rev-parse -q --verify main >/dev/null && echo main || { git rev-parse -q --verify origin/main >/dev/null && echo origin/main; } || true)}
  if tag=$(git describe --tags --abbrev=0 --match 'v[0-9]*' HEAD 2>/dev/null); then
    echo "baseline: release tag $tag"
    against "$tag"; checked=1
  fi
  if [ -n "$main" ] && base=$(git merge-base HEAD "$main") && [ "$base" != "$(git rev-parse HEAD)" ]; then
    echo "baseline: merge base with $main ($(git log -1 --format='%h %s' "$base"))"
    against "$base"; checked=1
  fi
  if [ "$checked" = 0 ]; then
    echo "baseline: no release tag and HEAD is on ${main:-main}: every commit that changed proto/ against its parent"
    local c n=0
    for c in $(git rev-list --first-parent HEAD -- proto); do
      git rev-parse -q --verify "$c^1" >/dev/null || continue # the root commit
      against "$(git rev-parse "$c^1")" "$(gitinput "$c")" "$(git log -1 --format='%h %s' "$c")"; n=$((n + 1))
    done
    echo "buf breaking: $n commits checked"
    git rev-parse -q --verify HEAD >/dev/null && against HEAD
  fi
}

case "${1:-check}" in
generate)
  buf generate
  ;;
check)
  buf lint
  echo "buf lint: ok"
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  buf generate -o "$tmp"
  if ! diff -r <(cd "$tmp/proto" && find . -name '*.go' | sort | xargs cat) \
               <(cd proto && find . -name '*.go' | sort | xargs cat) >/dev/null; then
    echo "generated code is stale: run 'make proto' and commit the result" >&2
    exit 1
  fi
  echo "buf generate: no diff"
  breaking
  ;;
breaking)
  breaking
  ;;
*) echo "usage: $0 generate|check|breaking" >&2; exit 2 ;;
esac
