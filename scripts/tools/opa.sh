#!/usr/bin/env bash
# Builds OPA with an Envoy External Authorization (ext_authz v3) gRPC server plugin named
# `envoy_ext_authz_grpc`, and installs it as $AGENTD_TOOLS/opa/$OPA_ENVOY_VERSION/bin/opa.
#
# Why not upstream's opa-envoy-plugin: the Go module proxy that our machines reach refuses
# github.com/open-policy-agent/opa-envoy-plugin outright (HTTP 403 "This module version is not
# available" for @v/list, @latest and every version asked, v1.19.1-envoy included), and nothing
# else we may use serves it. So this script builds OPA itself (github.com/open-policy-agent/opa
# v${OPA_ENVOY_VERSION%-envoy}, served by the proxy) in a wrapper module whose main package registers
# our own small implementation of the plugin (the Go source is below, written for this project). It
# implements the part of upstream's interface we use:
#   plugins:
#     envoy_ext_authz_grpc:
#       addr: 127.0.0.1:9191        # default :9191; "unix:///path.sock" for a unix socket
#       path: envoy/authz/allow     # default; or query: data.envoy.authz.allow
#       dry-run: false              # true: always allow (the decision is still evaluated and logged)
#       enable-reflection: false    # gRPC server reflection
#       grpc-max-recv-msg-size: 4194304
#       skip-request-body-parse: false
# input: attributes (protojson of CheckRequest.attributes), parsed_path, parsed_query, parsed_body,
#        truncated_body, version {encoding: protojson, ext_authz: v3}
# decision: a boolean, or an object {allowed, headers, response_headers_to_add,
#        request_headers_to_remove, http_status, body, dynamic_metadata}.
# Not implemented: decision-log integration, ext_proc, the v2 API, gRPC request-body parsing
# (protoset), performance metrics.
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

if [[ -e "$dest/.complete" ]]; then
  echo "$tool $ver: cached"
  exit 0
fi

log() { echo "[setup:$tool] $*" >&2; }

opa_ver="${ver%-envoy}"
if [[ "$opa_ver" == "$ver" || ! "$opa_ver" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  log "OPA_ENVOY_VERSION must look like X.Y.Z-envoy (got $ver)"
  exit 1
fi
mod=github.com/open-policy-agent/opa
modver="v$opa_ver"
ecp=github.com/envoyproxy/go-control-plane/envoy
ecp_ver="${AGENTD_GO_CONTROL_PLANE_VERSION:-v1.40.0}" # matches ENVOY_VERSION 1.40

mkdir -p "$root"
exec 9>"$root/.lock"
flock 9
if [[ -e "$dest/.complete" ]]; then
  echo "$tool $ver: cached"
  exit 0
fi

export CGO_ENABLED=0 GOFLAGS=-mod=mod
gobuildp="${AGENTD_GO_BUILD_P:-2}"

# The plugin's Go source (our own code). Bump plugin_rev when it changes.
plugin_rev=r1
write_plugin_source() {
  cat >"$1/main.go" <<'GOEOF'
// Command opa is OPA with an Envoy External Authorization (ext_authz v3) gRPC server plugin,
// registered as "envoy_ext_authz_grpc". Written for the agentd project by scripts/tools/opa.sh
// (the upstream opa-envoy-plugin module is not available from our Go module proxy).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/open-policy-agent/opa/cmd"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/runtime"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/util"
)

const pluginName = "envoy_ext_authz_grpc"

// Config is the plugin's configuration (plugins.envoy_ext_authz_grpc in OPA's config file).
type Config struct {
	Addr                 string `json:"addr"`
	Path                 string `json:"path"`
	Query                string `json:"query"`
	DryRun               bool   `json:"dry-run"`
	EnableReflection     bool   `json:"enable-reflection"`
	GRPCMaxRecvMsgSize   int    `json:"grpc-max-recv-msg-size"`
	GRPCMaxSendMsgSize   int    `json:"grpc-max-send-msg-size"`
	SkipRequestBodyParse bool   `json:"skip-request-body-parse"`

	query string // the Rego query evaluated for each check
}

type factory struct{}

func (factory) Validate(_ *plugins.Manager, raw []byte) (any, error) {
	cfg := Config{Addr: ":9191", Path: "envoy/authz/allow", GRPCMaxRecvMsgSize: 4 << 20}
	if err := util.Unmarshal(raw, &cfg); err != nil {
		return nil, err
	}
	if cfg.Addr == "" {
		return nil, errors.New(pluginName + ": addr must not be empty")
	}
	cfg.query = strings.TrimSpace(cfg.Query)
	if cfg.query == "" {
		p := strings.Trim(cfg.Path, "/")
		if p == "" {
			return nil, errors.New(pluginName + ": path must not be empty")
		}
		ref := ast.DefaultRootRef.Copy()
		for _, seg := range strings.Split(p, "/") {
			ref = append(ref, ast.StringTerm(seg))
		}
		cfg.query = ref.String()
	}
	if _, err := ast.ParseBody(cfg.query); err != nil {
		return nil, fmt.Errorf("%s: invalid query %q: %w", pluginName, cfg.query, err)
	}
	return &cfg, nil
}

func (factory) New(m *plugins.Manager, c any) plugins.Plugin {
	p := &plugin{manager: m, cfg: *c.(*Config)}
	m.RegisterCompilerTrigger(p.compilerUpdated)
	m.UpdatePluginStatus(pluginName, &plugins.Status{State: plugins.StateNotReady})
	return p
}

type plugin struct {
	authv3.UnimplementedAuthorizationServer
	manager *plugins.Manager

	mu       sync.Mutex
	cfg      Config
	server   *grpc.Server
	prepared *rego.PreparedEvalQuery // reset when the policies change
}

func (p *plugin) compilerUpdated(storage.Transaction) {
	p.mu.Lock()
	p.prepared = nil
	p.mu.Unlock()
}

func (p *plugin) Start(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.startLocked()
}

func (p *plugin) startLocked() error {
	network, address := "tcp", p.cfg.Addr
	if strings.HasPrefix(address, "unix://") {
		network, address = "unix", strings.TrimPrefix(address, "unix://")
	}
	lis, err := net.Listen(network, address)
	if err != nil {
		p.manager.UpdatePluginStatus(pluginName, &plugins.Status{State: plugins.StateErr, Message: err.Error()})
		return fmt.Errorf("%s: %w", pluginName, err)
	}
	var opts []grpc.ServerOption
	if p.cfg.GRPCMaxRecvMsgSize > 0 {
		opts = append(opts, grpc.MaxRecvMsgSize(p.cfg.GRPCMaxRecvMsgSize))
	}
	if p.cfg.GRPCMaxSendMsgSize > 0 {
		opts = append(opts, grpc.MaxSendMsgSize(p.cfg.GRPCMaxSendMsgSize))
	}
	srv := grpc.NewServer(opts...)
	authv3.RegisterAuthorizationServer(srv, p)
	if p.cfg.EnableReflection {
		reflection.Register(srv)
	}
	p.server = srv
	p.prepared = nil
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			p.manager.Logger().Error("%s: gRPC server failed: %v", pluginName, err)
			p.manager.UpdatePluginStatus(pluginName, &plugins.Status{State: plugins.StateErr, Message: err.Error()})
		}
	}()
	p.manager.Logger().WithFields(map[string]any{
		"addr": p.cfg.Addr, "query": p.cfg.query, "dry-run": p.cfg.DryRun,
	}).Info("Starting envoy_ext_authz_grpc gRPC server (agentd build).")
	p.manager.UpdatePluginStatus(pluginName, &plugins.Status{State: plugins.StateOK})
	return nil
}

func stopServer(ctx context.Context, srv *grpc.Server) {
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		srv.Stop()
	}
}

func (p *plugin) Stop(ctx context.Context) {
	p.mu.Lock()
	srv := p.server
	p.server = nil
	p.mu.Unlock()
	stopServer(ctx, srv)
	p.manager.UpdatePluginStatus(pluginName, &plugins.Status{State: plugins.StateNotReady})
}

func (p *plugin) Reconfigure(ctx context.Context, c any) {
	p.mu.Lock()
	old := p.server
	p.server = nil
	p.cfg = *c.(*Config)
	p.prepared = nil
	p.mu.Unlock()
	stopServer(ctx, old)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.startLocked(); err != nil {
		p.manager.Logger().Error("%v", err)
	}
}

// Check implements envoy.service.auth.v3.Authorization.
func (p *plugin) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := time.Now()
	p.mu.Lock()
	cfg := p.cfg
	p.mu.Unlock()

	input, err := makeInput(req, cfg.SkipRequestBodyParse)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%s: %v", pluginName, err)
	}
	decision, err := p.eval(ctx, cfg.query, input)
	if err != nil {
		p.manager.Logger().Error("%s: evaluating %s: %v", pluginName, cfg.query, err)
		return nil, status.Errorf(codes.Internal, "%s: %v", pluginName, err)
	}
	resp, allowed, err := makeResponse(decision)
	if err != nil {
		p.manager.Logger().Error("%s: %v", pluginName, err)
		return nil, status.Errorf(codes.Internal, "%s: %v", pluginName, err)
	}
	if cfg.DryRun && !allowed {
		resp, _, _ = makeResponse(true)
	}
	h := req.GetAttributes().GetRequest().GetHttp()
	p.manager.Logger().WithFields(map[string]any{
		"method": h.GetMethod(), "path": h.GetPath(), "allowed": allowed, "dry-run": cfg.DryRun,
		"duration_ms": float64(time.Since(start).Microseconds()) / 1000,
	}).Debug("ext_authz decision")
	return resp, nil
}

func (p *plugin) preparedQuery(ctx context.Context, query string, txn storage.Transaction) (*rego.PreparedEvalQuery, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.prepared != nil {
		return p.prepared, nil
	}
	pq, err := rego.New(
		rego.Query(query),
		rego.Compiler(p.manager.GetCompiler()),
		rego.Store(p.manager.Store),
		rego.Transaction(txn),
		rego.Runtime(p.manager.Info),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, err
	}
	p.prepared = &pq
	return p.prepared, nil
}

// eval returns the decision (nil when undefined).
func (p *plugin) eval(ctx context.Context, query string, input map[string]any) (any, error) {
	value, err := ast.InterfaceToValue(input)
	if err != nil {
		return nil, err
	}
	txn, err := p.manager.Store.NewTransaction(ctx)
	if err != nil {
		return nil, err
	}
	defer p.manager.Store.Abort(ctx, txn)
	pq, err := p.preparedQuery(ctx, query, txn)
	if err != nil {
		return nil, err
	}
	rs, err := pq.Eval(ctx, rego.EvalParsedInput(value), rego.EvalTransaction(txn))
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, nil
	}
	return rs[0].Expressions[0].Value, nil
}

func makeInput(req *authv3.CheckRequest, skipBody bool) (map[string]any, error) {
	bs, err := protojson.Marshal(req.GetAttributes())
	if err != nil {
		return nil, err
	}
	var attrs any
	if err := util.UnmarshalJSON(bs, &attrs); err != nil {
		return nil, err
	}
	h := req.GetAttributes().GetRequest().GetHttp()
	parsedPath := []any{}
	parsedQuery := map[string]any{}
	if u, err := url.Parse(h.GetPath()); err == nil {
		for _, seg := range strings.Split(strings.TrimLeft(u.Path, "/"), "/") {
			parsedPath = append(parsedPath, seg)
		}
		for k, vs := range u.Query() {
			parsedQuery[k] = stringsToAny(vs)
		}
	}
	raw := h.GetRawBody()
	if len(raw) == 0 {
		raw = []byte(h.GetBody())
	}
	truncated := false
	if cl := h.GetHeaders()["content-length"]; cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n > int64(len(raw)) {
			truncated = true
		}
	}
	var parsedBody any
	if !skipBody && !truncated && len(raw) > 0 {
		mt, _, _ := mime.ParseMediaType(h.GetHeaders()["content-type"])
		switch {
		case mt == "application/json" || strings.HasSuffix(mt, "+json"):
			if err := util.UnmarshalJSON(raw, &parsedBody); err != nil {
				parsedBody = nil // not JSON after all: policies see parsed_body == null
			}
		case mt == "application/x-www-form-urlencoded":
			if vals, err := url.ParseQuery(string(raw)); err == nil {
				m := map[string]any{}
				for k, vs := range vals {
					m[k] = stringsToAny(vs)
				}
				parsedBody = m
			}
		}
	}
	return map[string]any{
		"attributes":     attrs,
		"parsed_path":    parsedPath,
		"parsed_query":   parsedQuery,
		"parsed_body":    parsedBody,
		"truncated_body": truncated,
		"version":        map[string]any{"encoding": "protojson", "ext_authz": "v3"},
	}, nil
}

func stringsToAny(vs []string) []any {
	out := make([]any, len(vs))
	for i, v := range vs {
		out[i] = v
	}
	return out
}

func makeResponse(decision any) (*authv3.CheckResponse, bool, error) {
	var obj map[string]any
	allowed := false
	switch v := decision.(type) {
	case nil: // undefined decision: deny
	case bool:
		allowed = v
	case map[string]any:
		obj = v
		a, ok := v["allowed"].(bool)
		if !ok {
			return nil, false, errors.New(`decision object must have a boolean "allowed" field`)
		}
		allowed = a
	default:
		return nil, false, fmt.Errorf("decision must be a boolean or an object, not %T", decision)
	}
	headers, err := headerOptions(obj["headers"])
	if err != nil {
		return nil, false, fmt.Errorf("headers: %w", err)
	}
	resp := &authv3.CheckResponse{}
	if dm, ok := obj["dynamic_metadata"]; ok && dm != nil {
		bs, err := json.Marshal(dm)
		if err != nil {
			return nil, false, err
		}
		s := &structpb.Struct{}
		if err := protojson.Unmarshal(bs, s); err != nil {
			return nil, false, fmt.Errorf("dynamic_metadata must be an object: %w", err)
		}
		resp.DynamicMetadata = s
	}
	if allowed {
		respHeaders, err := headerOptions(obj["response_headers_to_add"])
		if err != nil {
			return nil, false, fmt.Errorf("response_headers_to_add: %w", err)
		}
		var toRemove []string
		if l, ok := obj["request_headers_to_remove"].([]any); ok {
			for _, x := range l {
				s, ok := x.(string)
				if !ok {
					return nil, false, errors.New("request_headers_to_remove must be a list of strings")
				}
				toRemove = append(toRemove, s)
			}
		}
		resp.Status = &rpcstatus.Status{Code: int32(code.Code_OK)}
		resp.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: headers, HeadersToRemove: toRemove, ResponseHeadersToAdd: respHeaders,
		}}
		return resp, true, nil
	}
	httpStatus := int64(403)
	if s, ok := obj["http_status"]; ok {
		n, err := toInt(s)
		if err != nil || n < 100 || n > 599 {
			return nil, false, fmt.Errorf("http_status must be an HTTP status code, not %v", s)
		}
		httpStatus = n
	}
	body, _ := obj["body"].(string)
	resp.Status = &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)}
	resp.HttpResponse = &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
		Status: &typev3.HttpStatus{Code: typev3.StatusCode(httpStatus)}, Headers: headers, Body: body,
	}}
	return resp, false, nil
}

func toInt(v any) (int64, error) {
	switch n := v.(type) {
	case json.Number:
		return n.Int64()
	case float64:
		return int64(n), nil
	case int:
		return int64(n), nil
	case int64:
		return n, nil
	}
	return 0, fmt.Errorf("not a number: %v", v)
}

// headerOptions accepts {"name": "value" | ["v1", "v2"]} or a list of such objects. The first value
// of a name replaces the header, further values of the same name are appended.
func headerOptions(v any) ([]*corev3.HeaderValueOption, error) {
	if v == nil {
		return nil, nil
	}
	var objs []map[string]any
	switch x := v.(type) {
	case map[string]any:
		objs = []map[string]any{x}
	case []any:
		for _, e := range x {
			m, ok := e.(map[string]any)
			if !ok {
				return nil, errors.New("expected a list of objects")
			}
			objs = append(objs, m)
		}
	default:
		return nil, errors.New("expected an object or a list of objects")
	}
	var out []*corev3.HeaderValueOption
	seen := map[string]bool{}
	add := func(k, val string) {
		action := corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		if seen[strings.ToLower(k)] {
			action = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
		}
		seen[strings.ToLower(k)] = true
		out = append(out, &corev3.HeaderValueOption{
			Header: &corev3.HeaderValue{Key: k, Value: val}, AppendAction: action,
		})
	}
	for _, m := range objs {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			switch val := m[k].(type) {
			case string:
				add(k, val)
			case []any:
				for _, e := range val {
					s, ok := e.(string)
					if !ok {
						return nil, fmt.Errorf("header %q: values must be strings", k)
					}
					add(k, s)
				}
			default:
				return nil, fmt.Errorf("header %q: value must be a string or a list of strings", k)
			}
		}
	}
	return out, nil
}

func main() {
	runtime.RegisterPlugin(pluginName, factory{})
	if err := cmd.RootCommand.Execute(); err != nil {
		var e *cmd.ExitError
		if errors.As(err, &e) {
			os.Exit(e.Exit)
		}
		os.Exit(1)
	}
}
GOEOF
}

src="$root/src-$ver"
mkdir -p "$src"
stamp="$modver $ecp@$ecp_ver plugin-$plugin_rev"
if [[ ! -f "$src/go.sum" || "$(cat "$src/.stamp" 2>/dev/null)" != "$stamp" ]]; then
  log "resolving $mod@$modver and $ecp@$ecp_ver on the Go module proxy"
  if ! dl="$(cd "$src" && go mod download -json "$mod@$modver")"; then
    log "the Go module proxy did not provide $mod@$modver: $(jq -r .Error <<<"$dl" 2>/dev/null)"
    exit 1
  fi
  upstream_dir="$(jq -r .Dir <<<"$dl")"
  rm -f "$src/go.mod" "$src/go.sum" "$src/.stamp" "$src/.replace-args"
  upgo="$(go mod edit -json "$upstream_dir/go.mod" | jq -r .Go)"
  cat >"$src/go.mod" <<EOF
module agentd.local/tools/opa-envoy

go $upgo

require (
	$mod $modver
	$ecp $ecp_ver
)
EOF
  # Upstream's replace/exclude directives only apply in the main module: copy them.
  go mod edit -json "$upstream_dir/go.mod" | jq -r '
    ((.Replace // [])[] |
      "-replace=\(.Old.Path)\(if .Old.Version then "@"+.Old.Version else "" end)=\(.New.Path)\(if .New.Version then "@"+.New.Version else "" end)"),
    ((.Exclude // [])[] | "-exclude=\(.Path)@\(.Version)")' >"$src/.replace-args"
  if [[ -s "$src/.replace-args" ]]; then
    if grep -q -- '=\.\|=/' "$src/.replace-args"; then
      log "upstream go.mod has filesystem replace directives; they cannot be copied:"
      cat "$src/.replace-args" >&2
      exit 1
    fi
    log "copying $(wc -l <"$src/.replace-args") replace/exclude directive(s) from upstream go.mod"
    (cd "$src" && xargs go mod edit <"$src/.replace-args")
  fi
  write_plugin_source "$src"
  log "resolving dependencies (go mod tidy)"
  (cd "$src" && go mod tidy >&2)
  echo "$stamp" >"$src/.stamp"
else
  write_plugin_source "$src"
fi

tmp="$(mktemp -d "$root/.tmp-$ver.XXXXXX")"
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"

ldflags="-s -w -X github.com/open-policy-agent/opa/v1/version.Version=$opa_ver"
ldflags+=" -X github.com/open-policy-agent/opa/v1/version.Vcs=agentd-envoy_ext_authz_grpc-$plugin_rev"
log "building opa $opa_ver + envoy_ext_authz_grpc plugin ($plugin_rev) (cold build takes several minutes)"
start=$SECONDS
(cd "$src" && go build -p "$gobuildp" -trimpath -ldflags "$ldflags" -o "$tmp/bin/opa" .)
log "built opa in $((SECONDS - start))s"

got="$("$tmp/bin/opa" version 2>&1)"
got="${got%%$'\n'*}" # first line (no `| head -1`: SIGPIPE + pipefail)
if [[ "$got" != "Version: $opa_ver" ]]; then
  log "opa version says '$got', expected 'Version: $opa_ver'"
  exit 1
fi

rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
touch "$dest/.complete"
log "installed $dest/bin/opa"
