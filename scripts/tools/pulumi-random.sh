#!/usr/bin/env bash
# Builds the Pulumi resource plugin `pulumi-resource-random` for $PULUMI_RANDOM_VERSION into
#   $AGENTD_TOOLS/pulumi-random/$PULUMI_RANDOM_VERSION/bin/pulumi-resource-random
# (plus the generated schema.json beside bin/) from the Go module in scripts/tools/pulumi-random/.
#
# Why not Pulumi's own provider: the Go module proxy our machines reach refuses every version of
# github.com/pulumi/pulumi-random/provider/v4 (403 "This module version is not available"). The
# module in scripts/tools/pulumi-random/ builds an equivalent bridged provider from modules the proxy
# does serve (all pinned in its go.mod):
#   - github.com/pulumi/pulumi-terraform-bridge/v3 v3.137.0, its plugin-framework support (pkg/pf),
#   - the upstream Terraform provider github.com/terraform-providers/terraform-provider-random at
#     the pseudo-version pulumi-random 4.21.x pins (a terraform-plugin-framework provider), reached
#     through the nested module ./shim (its constructor is in an internal package),
#   - Pulumi's terraform-plugin-sdk/v2 fork (the same `replace` the bridge makes),
# plus our main.go, whose tokens and names follow the @pulumi/random SDK.
#
# Two passes: pass 1 builds the binary with empty placeholder schema/metadata and runs it in tfgen
# mode to generate the Pulumi schema and bridge metadata; pass 2 embeds them. The module is copied
# to $AGENTD_TOOLS/pulumi-random/src-<version>/ for the build (nothing is written into the repo).
#
# Rebuilds when the module's source changes: the install records a hash of the module's files in
# $dest/.srchash. See docs/toolchain/pulumi-random.md.
set -euo pipefail

if [[ -z "${PULUMI_RANDOM_VERSION:-}" ]]; then
  # shellcheck source=../versions.env
  source "$(dirname "$0")/../versions.env"
fi

tool=pulumi-random
ver="${PULUMI_RANDOM_VERSION#v}"
AGENTD_TOOLS="${AGENTD_TOOLS:-$HOME/.cache/agentd/tools}"
root="$AGENTD_TOOLS/$tool"
dest="$root/$ver"
mod="$(cd "$(dirname "${BASH_SOURCE[0]}")/pulumi-random" && pwd)"
# The @pulumi/random release whose tokens/properties main.go was checked against.
made_for=4.21.2
# Bump when the way the binary is built changes (flags, passes): forces a rebuild.
recipe=1
upstream_mod=github.com/terraform-providers/terraform-provider-random

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
  [[ -e "$dest/.complete" && -x "$dest/bin/pulumi-resource-random" \
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

command -v go >/dev/null || { log "go is needed to build pulumi-resource-random"; exit 1; }
if [[ "$ver" != "$made_for" ]]; then
  log "warning: scripts/tools/pulumi-random/main.go was checked against @pulumi/random $made_for," \
    "not $ver; compare the generated schema with the npm package (docs/toolchain/pulumi-random.md)"
fi
if [[ -e "$dest/bin/pulumi-resource-random" ]]; then
  log "source changed (was $(cut -c1-12 "$dest/.srchash" 2>/dev/null || echo 'unrecorded'), now $short): rebuilding"
fi

export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
gobuildp="${AGENTD_GO_BUILD_P:-2}"
ldflags="-s -w -X main.Version=$ver"

# --- work copy of the module ---------------------------------------------------------------------
src="$root/src-$ver"
work="$src/module"
mkdir -p "$src"
rm -rf "$work" "$work.new"
cp -R "$mod" "$work.new"
chmod -R u+w "$work.new"
mv "$work.new" "$work"

build() { # $1 = output
  (cd "$work" && go build -p "$gobuildp" -trimpath -ldflags "$ldflags" -o "$1" .)
}

start=$SECONDS
# --- pass 1: schema and bridge metadata ----------------------------------------------------------
gen="$src/gen"
stamp="$gen/.source-$srchash"
if [[ ! -f "$stamp" ]]; then
  log "resolving $upstream_mod (for the docs in the schema; the first run downloads ~250 modules)"
  updir="$(cd "$work" && go mod download -json "$upstream_mod" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$updir/docs/resources" ]] || { log "no upstream docs in '$updir'"; exit 1; }
  log "building pulumi-resource-random $ver, pass 1/2 (bridge + upstream; cold build ~5-8 min on 2 cores)"
  build "$src/stage1"
  log "generating the Pulumi schema (tfgen)"
  rm -rf "$gen"
  # --skip-examples: converting the HCL examples in the docs would need a `pulumi` CLI on PATH.
  if ! (cd "$work" && AGENTD_PULUMI_RANDOM_TFGEN=1 AGENTD_PULUMI_RANDOM_UPSTREAM_DIR="$updir" \
    PULUMI_MISSING_DOCS_ERROR=false "$src/stage1" schema --skip-examples --out "$gen" \
    >"$src/tfgen.log" 2>&1); then
    log "tfgen failed; see $src/tfgen.log"
    tail -20 "$src/tfgen.log" >&2
    exit 1
  fi
  [[ -s "$gen/schema.json" && -s "$gen/bridge-metadata.json" ]] \
    || { log "tfgen wrote no schema.json/bridge-metadata.json to $gen"; exit 1; }
  rm -f "$src/stage1"
  touch "$stamp"
fi
cp "$gen/schema.json" "$work/schema-embed.json"
cp "$gen/bridge-metadata.json" "$work/bridge-metadata.json"

# --- pass 2: the plugin with the schema embedded --------------------------------------------------
tmp="$(mktemp -d "$root/.build-$ver.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
mkdir -p "$tmp/bin"
log "building pulumi-resource-random $ver, pass 2/2 (schema embedded)"
build "$tmp/bin/pulumi-resource-random"
log "built in $((SECONDS - start)) s"

got="$("$tmp/bin/pulumi-resource-random" -version)"
[[ "$got" == "$ver" ]] || { log "built binary reports version '$got', want $ver"; exit 1; }

# Smoke test: a plugin started with no arguments prints the port it serves on.
"$tmp/bin/pulumi-resource-random" >"$tmp/smoke.out" 2>"$tmp/smoke.err" &
pid=$!
for _ in $(seq 1 60); do
  [[ -s "$tmp/smoke.out" ]] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.5
done
kill "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
port="$(head -n 1 "$tmp/smoke.out")"
[[ "$port" =~ ^[0-9]+$ ]] \
  || { log "pulumi-resource-random did not start (stdout '$port', stderr: $(head -c 300 "$tmp/smoke.err"))"; exit 1; }
rm -f "$tmp/smoke.out" "$tmp/smoke.err"

cp "$gen/schema.json" "$tmp/schema.json"
{
  echo "release $ver (stand-in built from scripts/tools/pulumi-random, source $short)"
  awk '$1 ~ /^github.com\/(pulumi\/pulumi-terraform-bridge\/v3|terraform-providers\/terraform-provider-random|hashicorp\/terraform-plugin-framework)$/ { print "module " $1 " " $2 }' "$work/go.mod"
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
log "installed $dest/bin/pulumi-resource-random (source $short)"
