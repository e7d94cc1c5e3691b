#!/usr/bin/env bash
# pulumi-resource-docker: see bridged-provider.sh and docs/toolchain/pulumi-docker.md.
exec bash "$(dirname "$0")/bridged-provider.sh" docker "$@"
