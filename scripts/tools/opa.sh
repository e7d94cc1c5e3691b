#!/usr/bin/env bash
# Builds OPA with an Envoy External Authorization (ext_authz v3) gRPC server plugin named
# `envoy_ext_authz_grpc` from the Go module in scripts/tools/opa-envoy/, and installs it as
# $AGENTD_TOOLS/opa/$OPA_ENVOY_VERSION/bin/opa (the path scripts/lib.sh and test/support/tools.ts use).
#
# Why not upstream's opa-envoy-plugin: the Go module proxy that our machines reach refuses
# github.com/open-policy-agent/opa-envoy-plugin outright (HTTP 403), so the module builds OPA itself
# (github.com/open-policy-agent/opa, the version pinned in its go.mod) with our own implementation of
# the plugin, which keeps upstream's configuration, input, decision format, answers and decision
# logs. Production images run upstream's openpolicyagent/opa:<version>-envoy-static with the same
# Rego. See docs/toolchain/opa.md.
#
# Rebuilds when the plugin's source changes: the install records a hash of the module's files
# (tests excluded) in $dest/.srchash, and the binary is replaced by an atomic rename, so OPA
# processes that tests are running keep their binary.
set -euo pipefail

if [[ -z "${OPA_ENVOY_VERSION:-}" ]]; then
  # shellcheck source=../versions.env
  source "$(dirname "$0")/../versions.env"
fi

tool=opa
ver="$OPA_ENVOY_VERSION"
AGENTD_TOOLS="${AGENTD_TOOLS:-$HOME/.cache/agentd/tools}"
root="$AGENTD_TOOLS/$tool"
dest="$root/$ver"
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/opa-envoy" && pwd)"
# Bump when the way the binary is built changes (flags, version stamping): forces a rebuild.
recipe=2

log() { echo "[setup:$tool] $*" >&2; }

opa_ver="${ver%-envoy}"
if [[ "$opa_ver" == "$ver" || ! "$opa_ver" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  log "OPA_ENVOY_VERSION must look like X.Y.Z-envoy (got $ver)"
  exit 1
fi

# The OPA that go.mod pins must be the one versions.env names.
mod_opa="$(awk '$1 == "github.com/open-policy-agent/opa" && $2 ~ /^v/ { print $2; exit }' "$src/go.mod")"
if [[ "$mod_opa" != "v$opa_ver" ]]; then
  log "scripts/tools/opa-envoy/go.mod requires github.com/open-policy-agent/opa ${mod_opa:-(nothing)}," \
    "but OPA_ENVOY_VERSION=$ver wants v$opa_ver. Align them, e.g.:"
  log "  (cd scripts/tools/opa-envoy && go get github.com/open-policy-agent/opa@v$opa_ver && go mod tidy)"
  exit 1
fi

# Hash of what goes into the binary: the module's files except tests, with their paths.
source_hash() {
  local f
  {
    echo "recipe=$recipe opa=$opa_ver"
    while IFS= read -r f; do
      printf '%s\n' "${f#"$src"/}"
      cat "$f"
    done < <(find "$src" -type f ! -name '*_test.go' ! -path '*/testdata/*' | LC_ALL=C sort)
  } | sha256sum | cut -c1-64
}
srchash="$(source_hash)"
short="${srchash:0:12}"

is_current() {
  [[ -e "$dest/.complete" && -x "$dest/bin/opa" && "$(cat "$dest/.srchash" 2>/dev/null)" == "$srchash" ]]
}

if is_current; then
  echo "$tool $ver: cached (plugin $short)"
  exit 0
fi

mkdir -p "$root"
exec 9>"$root/.lock"
flock 9
if is_current; then
  echo "$tool $ver: cached (plugin $short)"
  exit 0
fi

if ! command -v go >/dev/null; then
  log "building OPA with the ext_authz plugin needs Go (go.mod: $(awk '$1 == "go" { print $2 }' "$src/go.mod"))"
  exit 1
fi
if [[ -e "$dest/bin/opa" ]]; then
  log "plugin source changed (was $(cut -c1-12 "$dest/.srchash" 2>/dev/null || echo 'unrecorded'), now $short): rebuilding"
fi

export CGO_ENABLED=0 GOFLAGS=-mod=mod
gobuildp="${AGENTD_GO_BUILD_P:-2}"

# Build next to the destination (same filesystem, so the final rename is atomic).
tmp="$(mktemp -d "$root/.build-$ver.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

ldflags="-s -w"
ldflags+=" -X github.com/open-policy-agent/opa/v1/version.Version=$opa_ver"
ldflags+=" -X github.com/open-policy-agent/opa/v1/version.Vcs=agentd-envoy_ext_authz_grpc-$short"
ldflags+=" -X agentd.local/tools/opa-envoy/extauthz.BuildRevision=$short"
log "building opa $opa_ver + envoy_ext_authz_grpc plugin $short from scripts/tools/opa-envoy" \
  "(a cold build downloads the modules and takes several minutes)"
start=$SECONDS
(cd "$src" && go build -p "$gobuildp" -trimpath -ldflags "$ldflags" -o "$tmp/opa" .)
log "built in $((SECONDS - start))s"

got="$("$tmp/opa" version 2>&1)"
first="${got%%$'\n'*}" # first line (no `| head -1`: SIGPIPE + pipefail)
if [[ "$first" != "Version: $opa_ver" || "$got" != *"Build Commit: agentd-envoy_ext_authz_grpc-$short"* ]]; then
  log "unexpected \`opa version\` output:"
  echo "$got" >&2
  exit 1
fi

mkdir -p "$dest/bin"
chmod 755 "$tmp/opa"
mv -f "$tmp/opa" "$dest/bin/opa"
echo "$srchash" >"$tmp/srchash"
mv -f "$tmp/srchash" "$dest/.srchash"
touch "$dest/.complete"
# The heredoc-era build directory is no longer used.
rm -rf "$root/src-$ver"
log "installed $dest/bin/opa (plugin $short)"
