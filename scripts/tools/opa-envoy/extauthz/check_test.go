package extauthz

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/logging"
	logtest "github.com/open-policy-agent/opa/v1/logging/test"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

const testPolicy = `package agentd.envoy.authz

policy := object.get(input, ["attributes", "contextExtensions", "policy"], "")

result := {
	"allowed": true,
	"headers": {"x-agentd-client-id": "admin"},
	"request_headers_to_remove": ["x-api-key"],
	"dynamic_metadata": {"client_id": "admin"},
} if policy == "allow"

result := {
	"allowed": false,
	"http_status": 401,
	"headers": {"content-type": "application/json"},
	"body": "{\"error\":\"no\"}",
	"dynamic_metadata": {"reason": "no"},
} if policy == "deny"

result := true if policy == "bool"

result := {"allowed": "yes"} if policy == "malformed"

result := 1 if policy == "conflict"

result := 2 if policy == "conflict"
`

const testMaskPolicy = `package agentd.log

mask contains "/input/attributes/request/http/headers/x-api-key"

mask contains "/input/attributes/request/http/headers/authorization"
`

type testEnv struct {
	manager *plugins.Manager
	plugin  *Plugin
	console *logtest.Logger
	logger  *logtest.Logger
	metrics *prometheus.Registry
}

// newTestEnv runs a plugin manager over an in-memory store holding the policies and a bundle
// manifest, with console decision logs masked by data.agentd.log.mask, as components/render/opa.ts
// configures OPA. The gRPC server is not started: tests call Check directly.
func newTestEnv(t *testing.T, pluginConfig string, opaConfig string) *testEnv {
	t.Helper()
	ctx := context.Background()
	store := inmem.New()
	err := storage.Txn(ctx, store, storage.WriteParams, func(txn storage.Transaction) error {
		if err := store.UpsertPolicy(ctx, txn, "authz.rego", []byte(testPolicy)); err != nil {
			return err
		}
		if err := store.UpsertPolicy(ctx, txn, "log.rego", []byte(testMaskPolicy)); err != nil {
			return err
		}
		return bundle.WriteManifestToStore(ctx, store, txn, "agentd", bundle.Manifest{Revision: "rev-42", Roots: &[]string{"agentd"}})
	})
	if err != nil {
		t.Fatal(err)
	}
	if opaConfig == "" {
		opaConfig = `{"decision_logs": {"console": true, "mask_decision": "/agentd/log/mask"}}`
	}
	env := &testEnv{console: logtest.New(), logger: logtest.New(), metrics: prometheus.NewRegistry()}
	env.logger.SetLevel(logging.Debug)
	m, err := plugins.New([]byte(opaConfig), "test", store,
		plugins.ConsoleLogger(env.console), plugins.Logger(env.logger), plugins.WithPrometheusRegister(env.metrics))
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.DecisionLogs != nil {
		lcfg, err := logs.NewConfigBuilder().WithBytes(m.Config.DecisionLogs).WithServices(m.Services()).WithPlugins(m.Plugins()).Parse()
		if err != nil {
			t.Fatal(err)
		}
		m.Register(logs.Name, logs.New(lcfg, m))
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Stop(ctx) })
	env.manager = m
	env.plugin = NewPlugin(m, testConfig(t, pluginConfig))
	return env
}

func authzRequest(policy string, headers map[string]string) *authv3.CheckRequest {
	h := map[string]string{":path": "/api/v1/status", "x-api-key": "secret-key-1", "authorization": "Bearer secret-key-1"}
	for k, v := range headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/api/v1/status?verbose=1", Headers: h, Size: 7,
		}},
		ContextExtensions: map[string]string{"policy": policy},
	}}
}

// decisionLogs are the console decision log entries, as JSON objects (the way `opa run` prints).
func (e *testEnv) decisionLogs(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, entry := range e.console.Entries() {
		if entry.Message != "Decision Log" {
			continue
		}
		js, err := json.Marshal(entry.Fields)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(js, &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func (e *testEnv) lastDecisionLog(t *testing.T) (map[string]any, string) {
	t.Helper()
	logs := e.decisionLogs(t)
	if len(logs) == 0 {
		t.Fatal("no decision log entry")
	}
	last := logs[len(logs)-1]
	js, _ := json.Marshal(last)
	return last, string(js)
}

func decisionID(t *testing.T, resp *authv3.CheckResponse) string {
	t.Helper()
	id := resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue()
	if len(id) != 36 { // a UUID
		t.Fatalf("decision_id %q in %v", id, protojson.Format(resp))
	}
	return id
}

func TestCheckAllowedCarriesDecisionIDAndIsLoggedMasked(t *testing.T) {
	env := newTestEnv(t, `{"path": "agentd/envoy/authz/result"}`, "")
	resp, err := env.plugin.Check(context.Background(), authzRequest("allow", nil))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStatus().GetCode() != int32(code.Code_OK) || resp.GetOkResponse() == nil {
		t.Fatalf("%v", protojson.Format(resp))
	}
	md := resp.GetDynamicMetadata().AsMap()
	if md["client_id"] != "admin" {
		t.Errorf("policy metadata lost: %v", md)
	}
	id := decisionID(t, resp)

	entry, js := env.lastDecisionLog(t)
	if entry["decision_id"] != id {
		t.Errorf("decision log id %v, metadata id %s", entry["decision_id"], id)
	}
	if entry["path"] != "agentd/envoy/authz/result" || entry["query"] != nil {
		t.Errorf("path/query: %s", js)
	}
	if strings.Contains(js, "secret-key-1") {
		t.Errorf("the API key reached the decision log: %s", js)
	}
	erased, _ := entry["erased"].([]any)
	if len(erased) != 2 || !strings.Contains(js, `"/input/attributes/request/http/headers/x-api-key"`) ||
		!strings.Contains(js, `"/input/attributes/request/http/headers/authorization"`) {
		t.Errorf("erased: %v", entry["erased"])
	}
	if rev := entry["bundles"].(map[string]any)["agentd"].(map[string]any)["revision"]; rev != "rev-42" {
		t.Errorf("bundle revision %v", rev)
	}
	result := entry["result"].(map[string]any)
	if result["allowed"] != true || result["dynamic_metadata"].(map[string]any)["client_id"] != "admin" {
		t.Errorf("result %v", result)
	}
	input := entry["input"].(map[string]any)
	httpReq := input["attributes"].(map[string]any)["request"].(map[string]any)["http"].(map[string]any)
	if httpReq["size"] != float64(7) || httpReq["headers"].(map[string]any)[":path"] != "/api/v1/status" {
		t.Errorf("input %v", httpReq)
	}
	if input["version"].(map[string]any)["ext_authz"] != "v3" || input["parsed_query"].(map[string]any)["verbose"] == nil {
		t.Errorf("input %v", input)
	}
	if _, ok := entry["metrics"].(map[string]any)["timer_server_handler_ns"]; !ok {
		t.Errorf("metrics %v", entry["metrics"])
	}
	if _, ok := entry["timestamp"]; !ok {
		t.Errorf("no timestamp: %s", js)
	}

	// The input the policy saw was not masked (masking applies to the log only).
	resp, err = env.plugin.Check(context.Background(), authzRequest("allow", nil))
	if err != nil || decisionID(t, resp) == id {
		t.Errorf("a second check needs a new decision id (%v)", err)
	}
}

func TestCheckDeniedCarriesDecisionID(t *testing.T) {
	env := newTestEnv(t, `{"path": "agentd/envoy/authz/result"}`, "")
	resp, err := env.plugin.Check(context.Background(), authzRequest("deny", nil))
	if err != nil {
		t.Fatal(err)
	}
	denied := resp.GetDeniedResponse()
	if resp.GetStatus().GetCode() != int32(code.Code_PERMISSION_DENIED) || denied == nil ||
		denied.GetStatus().GetCode() != typev3.StatusCode_Unauthorized || denied.Body != `{"error":"no"}` ||
		len(denied.Headers) != 1 || denied.Headers[0].GetHeader().GetValue() != "application/json" {
		t.Fatalf("%v", protojson.Format(resp))
	}
	md := resp.GetDynamicMetadata().AsMap()
	id := decisionID(t, resp)
	if md["reason"] != "no" {
		t.Errorf("metadata %v", md)
	}
	entry, _ := env.lastDecisionLog(t)
	if entry["decision_id"] != id || entry["result"].(map[string]any)["allowed"] != false {
		t.Errorf("log %v", entry)
	}
}

func TestCheckBooleanDecision(t *testing.T) {
	env := newTestEnv(t, `{"path": "agentd/envoy/authz/result"}`, "")
	resp, err := env.plugin.Check(context.Background(), authzRequest("bool", nil))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStatus().GetCode() != int32(code.Code_OK) || resp.HttpResponse != nil || len(resp.GetDynamicMetadata().GetFields()) != 1 {
		t.Errorf("%v", protojson.Format(resp))
	}
	decisionID(t, resp)
}

func TestCheckFailuresAreGRPCErrorsAndLogged(t *testing.T) {
	env := newTestEnv(t, `{"path": "agentd/envoy/authz/result", "enable-performance-metrics": true}`, "")
	for policy, want := range map[string]string{
		"undefined": "undefined decision",
		"malformed": "failed to get response status: type assertion error",
		"conflict":  "produced conflicting values", // OPA >= 1.22; before: "complete rules must not produce multiple outputs"
	} {
		resp, err := env.plugin.Check(context.Background(), authzRequest(policy, nil))
		if resp != nil || err == nil {
			t.Fatalf("%s: want an error, got %v", policy, protojson.Format(resp))
		}
		// gRPC sends a plain error as UNKNOWN: Envoy treats it as a failed check and refuses.
		if st := status.Convert(err); st.Code() != codes.Unknown || !strings.Contains(st.Message(), want) {
			t.Errorf("%s: %v", policy, err)
		}
		entry, js := env.lastDecisionLog(t)
		if entry["error"] == nil || entry["result"] != nil || !strings.Contains(js, want) {
			t.Errorf("%s: decision log %s", policy, js)
		}
		if strings.Contains(js, "secret-key-1") {
			t.Errorf("%s: the API key reached the decision log", policy)
		}
	}
	if n := testutil.ToFloat64(env.plugin.metrics.errors.WithLabelValues("envoyauth_eval_error")); n != 1 {
		t.Errorf("error_counter{envoyauth_eval_error} = %v", n)
	}
	if n := testutil.ToFloat64(env.plugin.metrics.errors.WithLabelValues("envoyauth_result_error")); n != 1 {
		t.Errorf("error_counter{envoyauth_result_error} = %v", n)
	}
	if n := testutil.ToFloat64(env.plugin.metrics.errors.WithLabelValues("eval_conflict_error")); n != 1 {
		t.Errorf("error_counter{eval_conflict_error} = %v", n)
	}
	if _, err := env.plugin.Check(context.Background(), authzRequest("allow", nil)); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(env.metrics, "grpc_request_duration_seconds"); n != 1 {
		t.Errorf("grpc_request_duration_seconds series: %d", n)
	}
}

func TestCheckUnparseableRequestIs400(t *testing.T) {
	env := newTestEnv(t, `{"path": "agentd/envoy/authz/result"}`, "")
	req := authzRequest("allow", map[string]string{"content-type": "application/json"})
	req.Attributes.Request.Http.Body = "{not json"
	resp, err := env.plugin.Check(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	denied := resp.GetDeniedResponse()
	if resp.GetStatus().GetCode() != int32(code.Code_PERMISSION_DENIED) || denied.GetStatus().GetCode() != typev3.StatusCode_BadRequest ||
		!strings.HasPrefix(denied.Body, "request_parse_error: ") {
		t.Errorf("%v", protojson.Format(resp))
	}
	entry, js := env.lastDecisionLog(t)
	if entry["input"] != nil || entry["error"] == nil {
		t.Errorf("decision log %s", js)
	}
}

func TestCheckDryRunAllowsButLogsTheDenial(t *testing.T) {
	env := newTestEnv(t, `{"path": "agentd/envoy/authz/result", "dry-run": true}`, "")
	resp, err := env.plugin.Check(context.Background(), authzRequest("deny", nil))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStatus().GetCode() != int32(code.Code_OK) || resp.GetOkResponse() == nil || len(resp.GetOkResponse().Headers) != 0 {
		t.Errorf("%v", protojson.Format(resp))
	}
	if resp.GetDynamicMetadata().AsMap()["reason"] != "no" {
		t.Errorf("metadata %v", resp.GetDynamicMetadata())
	}
	entry, _ := env.lastDecisionLog(t)
	if entry["decision_id"] != decisionID(t, resp) || entry["result"].(map[string]any)["allowed"] != false {
		t.Errorf("log %v", entry)
	}
}

func TestCheckWithoutDecisionLogs(t *testing.T) {
	env := newTestEnv(t, `{"path": "agentd/envoy/authz/result"}`, `{}`)
	resp, err := env.plugin.Check(context.Background(), authzRequest("allow", nil))
	if err != nil {
		t.Fatal(err)
	}
	decisionID(t, resp)
	if n := len(env.decisionLogs(t)); n != 0 {
		t.Errorf("%d decision logs", n)
	}
}

func TestCheckSeesPolicyUpdates(t *testing.T) {
	env := newTestEnv(t, `{"path": "agentd/envoy/authz/result"}`, "")
	ctx := context.Background()
	if resp, err := env.plugin.Check(ctx, authzRequest("bool", nil)); err != nil || resp.GetStatus().GetCode() != int32(code.Code_OK) {
		t.Fatalf("%v %v", resp, err)
	}
	store := env.manager.Store
	err := storage.Txn(ctx, store, storage.WriteParams, func(txn storage.Transaction) error {
		return store.UpsertPolicy(ctx, txn, "authz.rego", []byte(strings.Replace(testPolicy, `result := true if policy == "bool"`, `result := false if policy == "bool"`, 1)))
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := env.plugin.Check(ctx, authzRequest("bool", nil)); err != nil || resp.GetStatus().GetCode() != int32(code.Code_PERMISSION_DENIED) {
		t.Errorf("after the policy change: %v %v", resp, err)
	}
}

func TestServesGRPCOnAUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "authz.sock")
	env := newTestEnv(t, `{"path": "agentd/envoy/authz/result", "addr": "unix://`+sock+`"}`, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := env.plugin.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer env.plugin.Stop(ctx)
	if st := env.manager.PluginStatus()[PluginName]; st == nil || st.State != plugins.StateOK {
		t.Fatalf("plugin status %v", st)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	resp, err := client.Check(ctx, authzRequest("allow", nil))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStatus().GetCode() != int32(code.Code_OK) {
		t.Errorf("%v", protojson.Format(resp))
	}
	decisionID(t, resp)
	_, err = client.Check(ctx, authzRequest("undefined", nil))
	if st := status.Convert(err); st.Code() != codes.Unknown || st.Message() != "undefined decision" {
		t.Errorf("over gRPC: %v", err)
	}
}

func TestListenAddresses(t *testing.T) {
	for _, bad := range []string{"http://127.0.0.1:0", "127.0.0.1:notaport"} {
		if l, err := listen(bad); err == nil {
			l.Close()
			t.Errorf("%s: expected an error", bad)
		}
	}
	for _, good := range []string{"127.0.0.1:0", "grpc://127.0.0.1:0", "unix://" + filepath.Join(t.TempDir(), "s.sock")} {
		l, err := listen(good)
		if err != nil {
			t.Errorf("%s: %v", good, err)
			continue
		}
		l.Close()
	}
}
