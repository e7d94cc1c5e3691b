#!/usr/bin/env bash
# Builds the Pulumi Kubernetes provider plugin (pulumi-resource-kubernetes) $PULUMI_KUBERNETES_VERSION
# from the Go module proxy into $AGENTD_TOOLS/pulumi-kubernetes/<version>/bin/.
#
# The provider lives in the Go module github.com/pulumi/pulumi-kubernetes/provider/v4, which has no
# tags of its own: a release vX.Y.Z is the repository tag vX.Y.Z, so the proxy knows the provider
# only by a pseudo-version v4.0.0-<commit time>-<commit>. We build it through a wrapper module
# (local/tools-pulumi-kubernetes) that requires that pseudo-version, carries over the provider's
# module-to-module replace/exclude directives, and holds a copy of cmd/pulumi-resource-kubernetes
# (main.go embeds files generated next to it: schema-embed.json = schema.json with its version set,
# terraform-mapping-embed.json = terraform-mapping.json compacted; helm-mapping.json if the release
# has it). The version is stamped with -X .../provider/v4/pkg/version.Version.
#
# Which pseudo-version belongs to a release: the table below (checked by hand), or
# $PULUMI_KUBERNETES_PROVIDER_MODVER, or else it is derived from the commit of the sdk/vX.Y.Z tag
# (which the proxy reports for the sdk/v4 module) — that tag may sit a commit or two after the
# release tag, so prefer the table. The proxy reachable here serves the provider module only at
# the commit of v4.25.0 (see docs/toolchain/pulumi-kubernetes.md); other versions stop with an error.
set -euo pipefail
want_ver="${PULUMI_KUBERNETES_VERSION:-}"   # the caller's choice wins over versions.env
source "$(dirname "$0")/../lib.sh"
AGENTD_LOG_TAG=setup:pulumi-kubernetes
VER="${want_ver:-$PULUMI_KUBERNETES_VERSION}"
VER="${VER#v}"
tool=pulumi-kubernetes
dest="$AGENTD_TOOLS/$tool/$VER"
if [ -f "$dest/.complete" ]; then log "$tool $VER: cached"; exit 0; fi

PROV_MOD=github.com/pulumi/pulumi-kubernetes/provider/v4
SDK_MOD=github.com/pulumi/pulumi-kubernetes/sdk/v4
CMD_DIR=cmd/pulumi-resource-kubernetes

# release -> provider/v4 pseudo-version (commit of the repository tag v<release>).
known_modver() {
  case "$1" in
    4.25.0) echo v4.0.0-20260115033456-f47bc2d6f199 ;;
    *) return 1 ;;
  esac
}

command -v go >/dev/null || die "go is needed to build $tool"
export CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$AGENTD_TOOLS/$tool"

modver="${PULUMI_KUBERNETES_PROVIDER_MODVER:-}"
[ -n "$modver" ] || modver="$(known_modver "$VER" || true)"
if [ -z "$modver" ]; then
  log "deriving the provider module version from the sdk/v$VER tag"
  if meta="$(cd "$AGENTD_TOOLS/$tool" && go list -m -f '{{with .Time}}{{.UTC.Format "20060102150405"}}{{end}} {{with .Origin}}{{.Hash}}{{end}}' "$SDK_MOD@v$VER" 2>&1)" \
     && [[ "$meta" =~ ^[0-9]{14}\ [0-9a-f]{40}$ ]]; then
    modver="v4.0.0-${meta% *}-$(echo "${meta#* }" | cut -c1-12)"
  else
    die "the Go module proxy does not serve $SDK_MOD@v$VER, so the commit of release $VER is unknown here ($meta). Set PULUMI_KUBERNETES_PROVIDER_MODVER to the provider/v4 pseudo-version of that release, or pin a release the proxy serves (4.25.0)."
  fi
fi

log "resolving $PROV_MOD@$modver (release $VER)"
if ! info="$(cd "$AGENTD_TOOLS/$tool" && go mod download -json "$PROV_MOD@$modver" 2>&1)"; then
  die "the Go module proxy does not serve $PROV_MOD@$modver for release $VER: $(echo "$info" | grep -m1 -i 'error\|forbidden\|not' || echo "$info" | head -n 3)"
fi
moddir="$(echo "$info" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
gomod="$(echo "$info" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
[ -d "$moddir/$CMD_DIR" ] && [ -f "$gomod" ] || die "unexpected layout of $PROV_MOD@$modver ($moddir)"

src="$AGENTD_TOOLS/$tool/src-$VER"
mkdir -p "$src"

# A stdlib-only helper: writes the embed files and turns the provider's go.mod directives into
# `go mod edit` flags (module-to-module replaces/excludes; local-path replaces are listed apart).
cat > "$src/prep.go" <<'EOF'
//go:build ignore

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
)

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func main() {
	switch os.Args[1] {
	case "schema": // in out version
		raw, err := os.ReadFile(os.Args[2])
		must(err)
		var spec map[string]json.RawMessage
		must(json.Unmarshal(raw, &spec))
		v, _ := json.Marshal(os.Args[4])
		spec["version"] = v
		out, err := json.Marshal(spec)
		must(err)
		must(os.WriteFile(os.Args[3], out, 0o644))
	case "compact": // in out
		raw, err := os.ReadFile(os.Args[2])
		must(err)
		var buf bytes.Buffer
		must(json.Compact(&buf, raw))
		must(os.WriteFile(os.Args[3], buf.Bytes(), 0o644))
	case "directives": // stdin: go mod edit -json
		var m struct {
			Replace []struct{ Old, New struct{ Path, Version string } }
			Exclude []struct{ Path, Version string }
		}
		must(json.NewDecoder(os.Stdin).Decode(&m))
		at := func(p, v string) string {
			if v == "" {
				return p
			}
			return p + "@" + v
		}
		for _, r := range m.Replace {
			if r.New.Version == "" {
				fmt.Printf("local %s %s\n", at(r.Old.Path, r.Old.Version), r.New.Path)
			} else {
				fmt.Printf("-replace=%s=%s\n", at(r.Old.Path, r.Old.Version), at(r.New.Path, r.New.Version))
			}
		}
		for _, e := range m.Exclude {
			fmt.Printf("-exclude=%s\n", at(e.Path, e.Version))
		}
	}
}
EOF

cd "$src"
rm -f go.mod go.sum
go mod init local/tools-pulumi-kubernetes >/dev/null 2>&1
go mod edit -json "$gomod" > gomod.json
go run prep.go directives < gomod.json > directives.txt
edits=(-require="$PROV_MOD@$modver")
while read -r line; do
  case "$line" in
    local\ *)
      set -- $line
      case "$2" in
        "$SDK_MOD")
          # The repository's own sdk module (../sdk): take the sdk/v4 release of the same number
          # if the proxy serves it, else the version the provider's go.mod requires.
          sdkver="v$VER"
          go list -m "$SDK_MOD@$sdkver" >/dev/null 2>&1 \
            || sdkver="$(awk -v m="$SDK_MOD" '$1==m {print $2; exit}' "$gomod")"
          [ -n "$sdkver" ] || die "no version of $SDK_MOD to stand in for $3"
          log "replacing $SDK_MOD => $3 (local in the provider's repository) by $SDK_MOD@$sdkver"
          edits+=(-require="$SDK_MOD@$sdkver") ;;
        *) die "the provider's go.mod replaces $2 by the local path $3, which this script does not know how to stand in for" ;;
      esac ;;
    *) edits+=("$line") ;;
  esac
done < directives.txt
go mod edit "${edits[@]}"

# The main package: a copy of the provider's cmd/pulumi-resource-kubernetes with the embeds.
find . -maxdepth 1 -name '*.json' -delete
find . -maxdepth 1 -name '*.go' ! -name prep.go -delete
for f in "$moddir/$CMD_DIR"/*.go "$moddir/$CMD_DIR"/*.json; do
  case "$(basename "$f")" in *_test.go|generate.go) continue ;; esac
  cp "$f" . && chmod u+w "$(basename "$f")"
done
go run prep.go schema schema.json schema-embed.json "$VER"
[ ! -f terraform-mapping.json ] || go run prep.go compact terraform-mapping.json terraform-mapping-embed.json
for e in $(sed -n 's|^//go:embed \(.*\)$|\1|p' ./*.go); do
  [ -f "$e" ] || die "main.go embeds $e, which this script does not know how to make"
done

tmp="$(mktemp -d "$AGENTD_TOOLS/$tool/.tmp-$VER-XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
mkdir -p "$tmp/bin"
log "building pulumi-resource-kubernetes $VER ($PROV_MOD@$modver; cold build is long: 20+ minutes on 2 cores)"
t0=$SECONDS
go build -p "${AGENTD_GO_BUILD_P:-2}" -trimpath -ldflags "-s -w -X $PROV_MOD/pkg/version.Version=$VER" \
  -o "$tmp/bin/pulumi-resource-kubernetes" .
log "built in $((SECONDS - t0)) s"

# Smoke test: a plugin started with no arguments prints the port it serves on.
"$tmp/bin/pulumi-resource-kubernetes" >"$tmp/smoke.out" 2>"$tmp/smoke.err" &
pid=$!
for _ in $(seq 1 120); do [ -s "$tmp/smoke.out" ] && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
port="$(head -n 1 "$tmp/smoke.out")"
[[ "$port" =~ ^[0-9]+$ ]] || die "pulumi-resource-kubernetes did not start (stdout '$port', stderr: $(head -c 300 "$tmp/smoke.err"))"
rm -f "$tmp/smoke.out" "$tmp/smoke.err"

printf '%s\n' "release $VER" "module $PROV_MOD@$modver" "$(go version)" > "$tmp/BUILDINFO"
touch "$tmp/.complete"
rm -rf "$dest" && mv "$tmp" "$dest"
trap - EXIT
log "pulumi-resource-kubernetes $VER installed in $dest/bin"
