#!/usr/bin/env bash
# Usage: bridged-provider.sh docker|random
# (called through the thin wrappers scripts/tools/pulumi-docker.sh and pulumi-random.sh)
#
# Builds the Pulumi resource plugin `pulumi-resource-<name>` for the pinned version into
#   $AGENTD_TOOLS/pulumi-<name>/<version>/bin/pulumi-resource-<name>
# (plus the generated schema.json beside bin/) from the Go module in scripts/tools/pulumi-<name>/.
#
# Why not Pulumi's own provider: the Go module proxy our machines reach refuses every version of
# github.com/pulumi/pulumi-docker/provider/v5 and github.com/pulumi/pulumi-random/provider/v4
# (403 "This module version is not available"). The module in scripts/tools/pulumi-<name>/ builds an
# equivalent bridged provider from modules the proxy does serve (all pinned in its go.mod):
#   - github.com/pulumi/pulumi-terraform-bridge/v3 v3.137.0 (the bridge both Pulumi providers use;
#     random goes through its plugin-framework support, pkg/pf),
#   - the upstream Terraform provider (see upstream_mod below), reached through the nested module
#     ./shim (its constructor is in an internal package),
#   - Pulumi's terraform-plugin-sdk/v2 fork (the same `replace` the bridge makes),
# plus our main.go, whose tokens and property names follow the @pulumi/<name> SDK.
#
# Two passes: pass 1 builds the binary with empty placeholder schema (and bridge metadata, where
# the provider has it) and runs it in tfgen mode to generate them; pass 2 embeds them. The module
# is copied to $AGENTD_TOOLS/pulumi-<name>/src-<version>/ for the build (nothing is written into
# the repo).
#
# Rebuilds when the module's source changes: the install records a hash of the module's files in
# $dest/.srchash. See docs/toolchain/pulumi-docker.md and docs/toolchain/pulumi-random.md.
set -euo pipefail

name="${1:-}"
# --- per-provider table -------------------------------------------------------------------------
#   ver_var       versions.env variable holding the version
#   made_for      the @pulumi/<name> release whose tokens/properties main.go was checked against
#   upstream_mod  the upstream Terraform provider module (its docs/ feed the schema's docs)
#   tags          extra `go build -tags`
#   metadata      1 = tfgen also writes bridge-metadata.json, which pass 2 embeds
#   smoke         1 = start the built plugin and check it prints a port
#   info_mods     extra go.mod modules (regex after github.com/) listed in BUILDINFO
#   tfgen_env     prefix of the env vars that put main.go in tfgen mode (<prefix>_TFGEN, <prefix>_UPSTREAM_DIR)
#   pass1_note    the time estimate in the pass-1 progress message
case "$name" in
  docker)
    ver_var=PULUMI_DOCKER_VERSION
    made_for=5.2.0
    # Upstream is github.com/kreuzwerker/terraform-provider-docker, whose go.mod declares this
    # path; go.mod `replace`s one by the other (the proxy serves only a pseudo-version).
    upstream_mod=github.com/terraform-providers/terraform-provider-docker
    # As in pulumi-docker's Makefile: no_compose drops the docker_compose resource and its heavy
    # dependency tree, as Pulumi's release builds do.
    tags=no_compose
    metadata=0
    smoke=0
    info_mods=
    tfgen_env=AGENTD_PULUMI_DOCKER
    pass1_note="cold build ~4 min on 2 cores, ~11 with module downloads"
    ;;
  random)
    ver_var=PULUMI_RANDOM_VERSION
    made_for=4.21.2
    # At the pseudo-version pulumi-random 4.21.x pins (a terraform-plugin-framework provider).
    upstream_mod=github.com/terraform-providers/terraform-provider-random
    tags=
    metadata=1
    smoke=1
    info_mods=hashicorp/terraform-plugin-framework
    tfgen_env=AGENTD_PULUMI_RANDOM
    pass1_note="cold build ~5-8 min on 2 cores"
    ;;
  *)
    echo "usage: $0 docker|random" >&2
    exit 2
    ;;
esac

if [[ -z "${!ver_var:-}" ]]; then
  # shellcheck source=../versions.env
  source "$(dirname "${BASH_SOURCE[0]}")/../versions.env"
fi

tool="pulumi-$name"
bin="pulumi-resource-$name"
ver="${!ver_var#v}"
AGENTD_TOOLS="${AGENTD_TOOLS:-$HOME/.cache/agentd/tools}"
root="$AGENTD_TOOLS/$tool"
dest="$root/$ver"
mod="$(cd "$(dirname "${BASH_SOURCE[0]}")/$tool" && pwd)"
# Bump when the way the binary is built changes (flags, passes): forces a rebuild.
# (It is part of the source hash: keep it at 1 unless a rebuild is wanted.)
recipe=1

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
  [[ -e "$dest/.complete" && -x "$dest/bin/$bin" \
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

command -v go >/dev/null || { log "go is needed to build $bin"; exit 1; }
if [[ "$ver" != "$made_for" ]]; then
  log "warning: scripts/tools/$tool/main.go was checked against @pulumi/$name $made_for," \
    "not $ver; compare the generated schema with the npm package (docs/toolchain/$tool.md)"
fi
if [[ -e "$dest/bin/$bin" ]]; then
  log "source changed (was $(cut -c1-12 "$dest/.srchash" 2>/dev/null || echo 'unrecorded'), now $short): rebuilding"
fi

export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
gobuildp="${AGENTD_GO_BUILD_P:-2}"
ldflags="-s -w -X main.Version=$ver"

# --- work copy of the module ---------------------------------------------------------------------
src="$root/src-$ver"
work="$src/module"
mkdir -p "$src"
# Left over from the heredoc-era docker script (the upstream copy and the generated wrapper
# module); none of these names is used by the current build, so this is a no-op otherwise.
rm -rf "$src/upstream" "$src/go.mod" "$src/go.mod.seed" "$src/go.mod.seed.used" "$src/go.sum" \
  "$src/main.go" "$src/schema.json" "$src"/.schema-*
rm -rf "$work" "$work.new"
cp -R "$mod" "$work.new"
chmod -R u+w "$work.new"
mv "$work.new" "$work"

build() { # $1 = output
  (cd "$work" && go build -p "$gobuildp" ${tags:+-tags "$tags"} -trimpath -ldflags "$ldflags" -o "$1" .)
}

start=$SECONDS
# --- pass 1: schema (and bridge metadata) ---------------------------------------------------------
gen="$src/gen"
stamp="$gen/.source-$srchash"
if [[ ! -f "$stamp" ]]; then
  log "resolving $upstream_mod (for the docs in the schema; the first run downloads ~250 modules)"
  updir="$(cd "$work" && go mod download -json "$upstream_mod" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$updir/docs/resources" ]] || { log "no upstream docs in '$updir'"; exit 1; }
  log "building $bin $ver, pass 1/2 (bridge + upstream; $pass1_note)"
  build "$src/stage1"
  log "generating the Pulumi schema (tfgen)"
  rm -rf "$gen"
  # --skip-examples: converting the HCL examples in the docs would need a `pulumi` CLI on PATH.
  if ! (cd "$work" && env "${tfgen_env}_TFGEN=1" "${tfgen_env}_UPSTREAM_DIR=$updir" \
    PULUMI_MISSING_DOCS_ERROR=false "$src/stage1" schema --skip-examples --out "$gen" \
    >"$src/tfgen.log" 2>&1); then
    log "tfgen failed; see $src/tfgen.log"
    tail -20 "$src/tfgen.log" >&2
    exit 1
  fi
  if [[ "$metadata" == 1 ]]; then
    [[ -s "$gen/schema.json" && -s "$gen/bridge-metadata.json" ]] \
      || { log "tfgen wrote no schema.json/bridge-metadata.json to $gen"; exit 1; }
  else
    [[ -s "$gen/schema.json" ]] || { log "tfgen wrote no schema.json to $gen"; exit 1; }
  fi
  rm -f "$src/stage1"
  touch "$stamp"
fi
cp "$gen/schema.json" "$work/schema-embed.json"
if [[ "$metadata" == 1 ]]; then
  cp "$gen/bridge-metadata.json" "$work/bridge-metadata.json"
fi

# --- pass 2: the plugin with the schema embedded --------------------------------------------------
tmp="$(mktemp -d "$root/.build-$ver.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
mkdir -p "$tmp/bin"
log "building $bin $ver, pass 2/2 (schema embedded)"
build "$tmp/bin/$bin"
log "built in $((SECONDS - start)) s"

got="$("$tmp/bin/$bin" -version)"
[[ "$got" == "$ver" ]] || { log "built binary reports version '$got', want $ver"; exit 1; }

if [[ "$smoke" == 1 ]]; then
  # Smoke test: a plugin started with no arguments prints the port it serves on.
  "$tmp/bin/$bin" >"$tmp/smoke.out" 2>"$tmp/smoke.err" &
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
    || { log "$bin did not start (stdout '$port', stderr: $(head -c 300 "$tmp/smoke.err"))"; exit 1; }
  rm -f "$tmp/smoke.out" "$tmp/smoke.err"
fi

cp "$gen/schema.json" "$tmp/schema.json"
# BUILDINFO: the bridge, the upstream provider (and info_mods) as required in go.mod; `replace`
# lines (`<path> => ...`) are skipped.
info_re="pulumi/pulumi-terraform-bridge/v3|terraform-providers/terraform-provider-$name${info_mods:+|$info_mods}"
{
  echo "release $ver (stand-in built from scripts/tools/$tool, source $short)"
  awk -v re="^github.com/($info_re)\$" '$1 ~ re && $2 != "=>" { print "module " $1 " " $2 }' "$work/go.mod"
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
log "installed $dest/bin/$bin (source $short)"
