#!/usr/bin/env bash
# Builds, from the Go module proxy only, what a Node.js/TypeScript Pulumi program needs:
#   pulumi                          the CLI, github.com/pulumi/pulumi/pkg/v3 at $PULUMI_VERSION
#   pulumi-language-nodejs          the Node.js language host (see NODEJS_HOST_SDK below)
#   pulumi-resource-pulumi-nodejs   plugin for pulumi.dynamic.Resource (a small sh shim)
# into $AGENTD_TOOLS/pulumi/$PULUMI_VERSION/bin. Put that dir on PATH: the CLI finds the
# language host and the shim next to itself. See docs/toolchain/pulumi.md.
set -euo pipefail

if [[ -z "${PULUMI_VERSION:-}" ]]; then
  # shellcheck source=../versions.env
  source "$(dirname "$0")/../versions.env"
fi

TOOL=pulumi
VERSION="$PULUMI_VERSION"
AGENTD_TOOLS="${AGENTD_TOOLS:-$HOME/.cache/agentd/tools}"
DEST="$AGENTD_TOOLS/$TOOL/$VERSION"

if [[ -e "$DEST/.complete" ]]; then
  echo "$TOOL $VERSION: cached"
  exit 0
fi

log() { echo "[setup:$TOOL] $*" >&2; }

for cmd in go jq; do
  command -v "$cmd" >/dev/null || { log "needs $cmd on PATH"; exit 1; }
done
export CGO_ENABLED=0 GOFLAGS=-mod=mod

PKG_MOD=github.com/pulumi/pulumi/pkg/v3
SDK_MOD=github.com/pulumi/pulumi/sdk/v3
LDFLAGS="-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$VERSION"
# The tags upstream's release build (.goreleaser.yml) uses.
TAGS=osusergo,grpcnotrace
# The language host's own module (sdk/nodejs/cmd/pulumi-language-nodejs/v3, untagged) is not
# served by the module proxy reachable here (403 on every query). sdk/v3 up to v3.68.0 still
# contained it as a package, so that is what is built; it drives the current CLI and the
# current @pulumi/pulumi npm SDK fine (docs/toolchain/pulumi.md).
NODEJS_HOST_SDK=v3.68.0

SRC="$AGENTD_TOOLS/$TOOL/src-$VERSION"
STAGE="$AGENTD_TOOLS/$TOOL/.stage-$VERSION.$$"
mkdir -p "$SRC"
rm -rf "$STAGE"
mkdir -p "$STAGE/bin"
trap 'rm -rf "$STAGE"' EXIT

# make_wrapper DIR MODULE VERSION
# Creates (afresh) in DIR a module local/tools-pulumi that requires MODULE@VERSION and carries
# over MODULE's own replace/exclude directives ('go install pkg@v' refuses modules that have
# replaces). A directory replace (=> ../sdk) becomes a requirement of the published sibling
# module at the version MODULE's go.mod requires (the same release).
make_wrapper() {
  local dir="$1" mod="$2" ver="$3" gomod
  mkdir -p "$dir"
  gomod="$(cd "$dir" && go mod download -json "$mod@$ver" | jq -r .GoMod)"
  [[ -f "$gomod" ]] || { log "no go.mod for $mod@$ver"; return 1; }
  local json godir
  json="$(go mod edit -json "$gomod")"
  godir="$(jq -r .Go <<<"$json")"
  rm -f "$dir/go.mod" "$dir/go.sum"
  (
    cd "$dir"
    go mod init local/tools-pulumi >/dev/null 2>&1
    go mod edit -go="$godir" -require="$mod@$ver"
    local old new newver reqver
    while IFS=$'\t' read -r old new newver; do
      if [[ -z "$newver" ]]; then
        reqver="$(jq -r --arg p "$old" '.Require[] | select(.Path == $p) | .Version' <<<"$json")"
        [[ -n "$reqver" ]] || { log "directory replace $old => $new has no requirement"; exit 1; }
        go mod edit -require="$old@$reqver"
      else
        go mod edit -replace="$old=$new@$newver"
      fi
    done < <(jq -r '(.Replace // [])[] | [.Old.Path + (if .Old.Version then "@" + .Old.Version else "" end), .New.Path, (.New.Version // "")] | @tsv' <<<"$json")
    while IFS= read -r ex; do
      go mod edit -exclude="$ex"
    done < <(jq -r '(.Exclude // [])[] | .Path + "@" + .Version' <<<"$json")
  )
}

# ---- pulumi CLI -------------------------------------------------------------------------------
log "building pulumi v$VERSION from $PKG_MOD (cold build: 5-13 minutes on 2 cores)"
make_wrapper "$SRC/cli" "$PKG_MOD" "v$VERSION"
(
  cd "$SRC/cli"
  go build -p "${AGENTD_GO_BUILD_P:-2}" -trimpath -tags "$TAGS" -ldflags "$LDFLAGS" -o "$STAGE/bin/pulumi" "$PKG_MOD/cmd/pulumi"
)
got="$("$STAGE/bin/pulumi" version)"
[[ "$got" == "v$VERSION" ]] || { log "built pulumi reports '$got', want v$VERSION"; exit 1; }

# ---- Node.js language host --------------------------------------------------------------------
log "building pulumi-language-nodejs from $SDK_MOD@$NODEJS_HOST_SDK (about a minute)"
make_wrapper "$SRC/nodejs-host" "$SDK_MOD" "$NODEJS_HOST_SDK"
(
  cd "$SRC/nodejs-host"
  go build -p "${AGENTD_GO_BUILD_P:-2}" -trimpath -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$NODEJS_HOST_SDK" \
    -o "$STAGE/bin/pulumi-language-nodejs" "$SDK_MOD/nodejs/cmd/pulumi-language-nodejs"
)
go version -m "$STAGE/bin/pulumi-language-nodejs" | grep -Eq "^[[:space:]]*(mod|dep)[[:space:]]+$SDK_MOD[[:space:]]+$NODEJS_HOST_SDK[[:space:]]" \
  || { log "pulumi-language-nodejs was not built from $SDK_MOD $NODEJS_HOST_SDK"; exit 1; }

# ---- dynamic-provider plugin --------------------------------------------------------------------
# Upstream ships a sh script of this name beside the CLI; without it a pulumi.dynamic.Resource
# makes the engine try to download a "pulumi-nodejs" provider from GitHub.
cat >"$STAGE/bin/pulumi-resource-pulumi-nodejs" <<'SHIM'
#!/bin/sh
# Plugin for pulumi.dynamic.Resource in Node.js programs: runs the dynamic provider that the
# program's own @pulumi/pulumi (npm) ships, resolved from the plugin's working directory.
script=$(node -e "process.stdout.write(require.resolve('@pulumi/pulumi/cmd/dynamic-provider'))") || exit 1
exec node "$script" "$@"
SHIM
chmod +x "$STAGE/bin/pulumi-resource-pulumi-nodejs"

# ---- install ----------------------------------------------------------------------------------
rm -rf "$DEST"
mv "$STAGE" "$DEST"
trap - EXIT
touch "$DEST/.complete"
log "installed into $DEST/bin"
