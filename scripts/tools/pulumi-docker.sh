#!/usr/bin/env bash
# Builds the Pulumi resource plugin `pulumi-resource-docker` for $PULUMI_DOCKER_VERSION into
#   $AGENTD_TOOLS/pulumi-docker/$PULUMI_DOCKER_VERSION/bin/pulumi-resource-docker
# (plus the generated schema.json beside bin/) from the Go module in scripts/tools/pulumi-docker/.
#
# Why not `go build github.com/pulumi/pulumi-docker/provider/v5/...`: the Go module proxy that
# this machine reaches refuses every version of github.com/pulumi/pulumi-docker/provider/v5
# (403 "This module version is not available"), so Pulumi's own provider module cannot be had.
# The module in scripts/tools/pulumi-docker/ builds an equivalent bridged provider from modules the
# proxy does serve (all pinned in its go.mod):
#   - github.com/pulumi/pulumi-terraform-bridge/v3 v3.137.0 (the version pulumi-docker v5 uses),
#   - the upstream Terraform provider github.com/kreuzwerker/terraform-provider-docker (declares
#     `module github.com/terraform-providers/terraform-provider-docker`; served only as a
#     pseudo-version; wired in by a `replace`), reached through the nested module ./shim (its
#     constructor is in an internal package),
#   - Pulumi's terraform-plugin-sdk/v2 fork (the same `replace` the bridge makes),
# plus our main.go, whose resource/data-source tokens and property names match the @pulumi/docker
# SDK. Not included: the natively implemented `docker:index/image:Image` resource (build+push);
# use RemoteImage / RegistryImage instead.
#
# Two passes: pass 1 builds the binary with an empty placeholder schema and runs it in tfgen mode to
# generate the Pulumi schema; pass 2 embeds it. The module is copied to
# $AGENTD_TOOLS/pulumi-docker/src-<version>/ for the build (nothing is written into the repo).
#
# Rebuilds when the module's source changes: the install records a hash of the module's files in
# $dest/.srchash. See docs/toolchain/pulumi-docker.md.
set -euo pipefail

if [[ -z "${PULUMI_DOCKER_VERSION:-}" ]]; then
  # shellcheck source=../versions.env
  source "$(dirname "$0")/../versions.env"
fi

tool=pulumi-docker
ver="${PULUMI_DOCKER_VERSION#v}"
AGENTD_TOOLS="${AGENTD_TOOLS:-$HOME/.cache/agentd/tools}"
root="$AGENTD_TOOLS/$tool"
dest="$root/$ver"
mod="$(cd "$(dirname "${BASH_SOURCE[0]}")/pulumi-docker" && pwd)"
# The @pulumi/docker release whose tokens/properties main.go was checked against.
made_for=5.2.0
# Bump when the way the binary is built changes (flags, passes): forces a rebuild.
recipe=1
upstream_mod=github.com/terraform-providers/terraform-provider-docker

log() { echo "[setup:$tool] $*" >&2; }

# Hash of what goes into the binary: the module's files, with their paths.
source_hash() {
  local f
  {
    echo "recipe=$recipe version=$ver"
    while IFS= read -r f; do
      printf '%s\n' "${f#"$mod"/}"
      cat "$f"
    done < <(find "$mod" -type f | LC_ALL=C sort)
  } | sha256sum | cut -c1-64
}
srchash="$(source_hash)"
short="${srchash:0:12}"

is_current() {
  [[ -e "$dest/.complete" && -x "$dest/bin/pulumi-resource-docker" \
    && "$(cat "$dest/.srchash" 2>/dev/null)" == "$srchash" ]]
}

if is_current; then
  echo "$tool $ver: cached (source $short)"
  exit 0
fi

mkdir -p "$root"
exec 9>"$root/.lock"
flock 9
if is_current; then
  echo "$tool $ver: cached (source $short)"
  exit 0
fi

command -v go >/dev/null || { log "go is needed to build pulumi-resource-docker"; exit 1; }
if [[ "$ver" != "$made_for" ]]; then
  log "warning: scripts/tools/pulumi-docker/main.go was checked against @pulumi/docker $made_for," \
    "not $ver; compare the generated schema with the npm package (docs/toolchain/pulumi-docker.md)"
fi
if [[ -e "$dest/bin/pulumi-resource-docker" ]]; then
  log "source changed (was $(cut -c1-12 "$dest/.srchash" 2>/dev/null || echo 'unrecorded'), now $short): rebuilding"
fi

export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
gobuildp="${AGENTD_GO_BUILD_P:-2}"
ldflags="-s -w -X main.Version=$ver"

# --- work copy of the module ---------------------------------------------------------------------
src="$root/src-$ver"
work="$src/module"
mkdir -p "$src"
# Left over from the heredoc-era script (the upstream copy and the generated wrapper module).
rm -rf "$src/upstream" "$src/go.mod" "$src/go.mod.seed" "$src/go.mod.seed.used" "$src/go.sum" \
  "$src/main.go" "$src/schema.json" "$src"/.schema-*
rm -rf "$work" "$work.new"
cp -R "$mod" "$work.new"
chmod -R u+w "$work.new"
mv "$work.new" "$work"

# Build flags as in pulumi-docker's Makefile (no_compose drops the docker_compose resource and
# its heavy dependency tree, as Pulumi's release builds do).
build() { # $1 = output
  (cd "$work" && go build -p "$gobuildp" -tags no_compose -trimpath -ldflags "$ldflags" -o "$1" .)
}

start=$SECONDS
# --- pass 1: schema ------------------------------------------------------------------------------
gen="$src/gen"
stamp="$gen/.source-$srchash"
if [[ ! -f "$stamp" ]]; then
  log "resolving $upstream_mod (for the docs in the schema; the first run downloads ~250 modules)"
  updir="$(cd "$work" && go mod download -json "$upstream_mod" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$updir/docs/resources" ]] || { log "no upstream docs in '$updir'"; exit 1; }
  log "building pulumi-resource-docker $ver, pass 1/2 (bridge + upstream; cold build ~4 min on 2 cores, ~11 with module downloads)"
  build "$src/stage1"
  log "generating the Pulumi schema (tfgen)"
  rm -rf "$gen"
  # --skip-examples: converting the HCL examples in the docs would need a `pulumi` CLI on PATH.
  if ! (cd "$work" && AGENTD_PULUMI_DOCKER_TFGEN=1 AGENTD_PULUMI_DOCKER_UPSTREAM_DIR="$updir" \
    PULUMI_MISSING_DOCS_ERROR=false "$src/stage1" schema --skip-examples --out "$gen" \
    >"$src/tfgen.log" 2>&1); then
    log "tfgen failed; see $src/tfgen.log"
    tail -20 "$src/tfgen.log" >&2
    exit 1
  fi
  [[ -s "$gen/schema.json" ]] || { log "tfgen wrote no schema.json to $gen"; exit 1; }
  rm -f "$src/stage1"
  touch "$stamp"
fi
cp "$gen/schema.json" "$work/schema-embed.json"

# --- pass 2: the plugin with the schema embedded --------------------------------------------------
tmp="$(mktemp -d "$root/.build-$ver.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
mkdir -p "$tmp/bin"
log "building pulumi-resource-docker $ver, pass 2/2 (schema embedded)"
build "$tmp/bin/pulumi-resource-docker"
log "built in $((SECONDS - start)) s"

got="$("$tmp/bin/pulumi-resource-docker" -version)"
[[ "$got" == "$ver" ]] || { log "built binary reports version '$got', want $ver"; exit 1; }

cp "$gen/schema.json" "$tmp/schema.json"
{
  echo "release $ver (stand-in built from scripts/tools/pulumi-docker, source $short)"
  awk '$1 ~ /^github.com\/(pulumi\/pulumi-terraform-bridge\/v3|terraform-providers\/terraform-provider-docker)$/ && $2 != "=>" { print "module " $1 " " $2 }' "$work/go.mod"
  go version
} >"$tmp/BUILDINFO"
echo "$srchash" >"$tmp/.srchash"
touch "$tmp/.complete"
# Swap the new install in; the old one (if any) is removed after the rename.
if [[ -e "$dest" ]]; then
  mv "$dest" "$root/.old-$ver.$$"
fi
mv "$tmp" "$dest"
trap - EXIT
rm -rf "$root/.old-$ver.$$"
log "installed $dest/bin/pulumi-resource-docker (source $short)"
