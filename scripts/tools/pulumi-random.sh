#!/usr/bin/env bash
# pulumi-resource-random: see bridged-provider.sh and docs/toolchain/pulumi-random.md.
exec bash "$(dirname "$0")/bridged-provider.sh" random "$@"
