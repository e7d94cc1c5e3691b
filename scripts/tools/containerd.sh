#!/usr/bin/env bash
# Builds containerd 2.x from the Go module proxy and installs containerd, containerd-shim-runc-v2
# and ctr into $AGENTD_TOOLS/containerd/$CONTAINERD_VERSION/bin/ (the container runtime, CRI
# included, of the one-node test cluster's kubelet; runc comes from Debian's runc package).
#
# Never on PATH nor in /usr: the machine's /usr/bin/containerd is Debian's 1.6, which the Docker
# engine runs (scripts/dockerd.sh) and which is too old for the node's kubelet; whoever starts ours
# names its path, its own config and its own socket (never /run/containerd/containerd.sock).
#
# github.com/containerd/containerd/v2 has no module-to-module replaces; a wrapper module requires it
# and imports the three main packages. Built as upstream's Makefile builds a static release
# (STATIC=1): CGO_ENABLED=0 and the tags urfave_cli_no_docs osusergo netgo static_build, plus
# no_grpc for the shim, plus no_btrfs no_devmapper no_zfs (BUILDING.md): the node uses the
# overlayfs snapshotter, and btrfs needs cgo anyway. The version is stamped with the Makefile's
# ldflags (version.Version and version.Package; version.Revision is a git commit, which the module
# zip does not have, so it stays empty). See docs/toolchain/kube-node.md.
set -euo pipefail

# shellcheck source=cache.sh
source "$(dirname "$0")/cache.sh"
tool_cache_begin containerd CONTAINERD_VERSION

tool_cache_lock

# The shim runs containers with `runc` found on PATH (Debian's /usr/sbin/runc, which docker.io
# also depends on).
tool_apt_ensure runc

tool_go_build_env
modver="v$ver"
mod=github.com/containerd/containerd/v2
tool_go_wrapper "$mod" "$modver" "$mod/cmd/containerd" "$mod/cmd/containerd-shim-runc-v2" "$mod/cmd/ctr"

tool_stage_begin

tags="urfave_cli_no_docs osusergo netgo static_build no_btrfs no_devmapper no_zfs"
ldflags="-s -w -X $mod/version.Version=$modver -X $mod/version.Package=$mod"
log "building containerd $ver (3 binaries, one at a time; a cold build takes about 3 min on 2 cores)"
tool_go_build containerd "$mod/cmd/containerd" -tags "$tags" -ldflags "$ldflags"
tool_go_build containerd-shim-runc-v2 "$mod/cmd/containerd-shim-runc-v2" -tags "$tags no_grpc" -ldflags "$ldflags"
tool_go_build ctr "$mod/cmd/ctr" -tags "$tags" -ldflags "$ldflags"

# `containerd --version`: "containerd github.com/containerd/containerd/v2 v2.4.2 " (empty revision);
# ctr's: "ctr github.com/containerd/containerd/v2 v2.4.2"; the shim's -v: "  Version:  v2.4.2".
for b in containerd ctr; do
  got="$("$tmp/bin/$b" --version 2>&1)"
  if [[ ! "$got" =~ ^"$b $mod $modver"( |$) ]]; then
    log "$b --version reports '$got', expected '$b $mod $modver'"
    exit 1
  fi
done
got="$("$tmp/bin/containerd-shim-runc-v2" -v 2>&1)"
if ! grep -Eq "^[[:space:]]*Version:[[:space:]]+$modver\$" <<<"$got"; then
  log "containerd-shim-runc-v2 -v reports '$got', expected Version: $modver"
  exit 1
fi

tool_stage_install
