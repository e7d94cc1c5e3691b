package extauthz

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// decisionFromJSON gives a decision as OPA's evaluation does (numbers as json.Number).
func decisionFromJSON(t *testing.T, js string) any {
	t.Helper()
	var v any
	if err := util.UnmarshalJSON([]byte(js), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func headerPairs(opts []*corev3.HeaderValueOption) []string {
	var out []string
	for _, o := range opts {
		if o.AppendAction != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD || o.Append != nil || o.KeepEmptyValue {
			out = append(out, "unexpected options on "+o.GetHeader().GetKey())
		}
		out = append(out, o.GetHeader().GetKey()+"="+o.GetHeader().GetValue())
	}
	return out
}

func equalStrings(a, b []string) bool {
	return strings.Join(a, "\n") == strings.Join(b, "\n")
}

func TestResultBoolean(t *testing.T) {
	for _, allowed := range []bool{true, false} {
		resp, got, err := decisionToResponse(allowed)
		if err != nil || got != allowed {
			t.Fatalf("%v: %v %v", allowed, got, err)
		}
		want := int32(code.Code_PERMISSION_DENIED)
		if allowed {
			want = int32(code.Code_OK)
		}
		if resp.GetStatus().GetCode() != want || resp.HttpResponse != nil || resp.DynamicMetadata != nil {
			t.Errorf("%v: %v", allowed, protojson.Format(resp))
		}
	}
}

func TestResultAllowedObject(t *testing.T) {
	resp, allowed, err := decisionToResponse(decisionFromJSON(t, `{
		"allowed": true,
		"headers": {"x-agentd-client-id": "admin", "x-multi": ["a", "b"]},
		"request_headers_to_remove": ["x-api-key", "authorization"],
		"response_headers_to_add": [{"x-one": "1"}, {"x-two": ["2", "3"]}],
		"query_parameters_to_set": {"q": "1", "r": ["2", "3"]},
		"query_parameters_to_remove": ["api_key"],
		"dynamic_metadata": {"client_id": "admin", "n": 3, "nested": {"ok": true, "l": [1, "x"]}},
		"http_status": 418,
		"body": "ignored when allowed"
	}`))
	if err != nil || !allowed {
		t.Fatalf("%v %v", allowed, err)
	}
	if resp.GetStatus().GetCode() != int32(code.Code_OK) {
		t.Errorf("status %v", resp.GetStatus())
	}
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatalf("no ok_response: %v", protojson.Format(resp))
	}
	if got, want := headerPairs(ok.Headers), []string{"x-agentd-client-id=admin", "x-multi=a", "x-multi=b"}; !equalStrings(got, want) {
		t.Errorf("headers %v", got)
	}
	if got, want := headerPairs(ok.ResponseHeadersToAdd), []string{"x-one=1", "x-two=2", "x-two=3"}; !equalStrings(got, want) {
		t.Errorf("response_headers_to_add %v", got)
	}
	if !equalStrings(ok.HeadersToRemove, []string{"x-api-key", "authorization"}) {
		t.Errorf("headers_to_remove %v", ok.HeadersToRemove)
	}
	if !equalStrings(ok.QueryParametersToRemove, []string{"api_key"}) || len(ok.QueryParametersToSet) != 3 ||
		ok.QueryParametersToSet[2].GetKey() != "r" || ok.QueryParametersToSet[2].GetValue() != "3" {
		t.Errorf("query parameters %v", protojson.Format(ok))
	}
	md := resp.GetDynamicMetadata().AsMap()
	if md["client_id"] != "admin" || md["n"] != float64(3) || md["nested"].(map[string]any)["ok"] != true {
		t.Errorf("dynamic_metadata %v", md)
	}
}

func TestResultDeniedObject(t *testing.T) {
	resp, allowed, err := decisionFromJSONResponse(t, `{
		"allowed": false,
		"http_status": 429,
		"headers": {"content-type": "application/json"},
		"body": "{\"error\":{\"code\":\"teapot\"}}",
		"request_headers_to_remove": ["ignored-when-denied"],
		"dynamic_metadata": {"reason": "teapot"}
	}`)
	if err != nil || allowed {
		t.Fatalf("%v %v", allowed, err)
	}
	denied := resp.GetDeniedResponse()
	if resp.GetStatus().GetCode() != int32(code.Code_PERMISSION_DENIED) || denied == nil {
		t.Fatalf("%v", protojson.Format(resp))
	}
	if denied.GetStatus().GetCode() != typev3.StatusCode_TooManyRequests || denied.Body != `{"error":{"code":"teapot"}}` {
		t.Errorf("%v", protojson.Format(denied))
	}
	if got := headerPairs(denied.Headers); !equalStrings(got, []string{"content-type=application/json"}) {
		t.Errorf("headers %v", got)
	}
	if resp.GetDynamicMetadata().AsMap()["reason"] != "teapot" {
		t.Errorf("metadata %v", resp.GetDynamicMetadata())
	}

	// Defaults: 403, no body, no headers, no metadata.
	resp, _, err = decisionFromJSONResponse(t, `{"allowed": false}`)
	if err != nil {
		t.Fatal(err)
	}
	want := &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden}}}
	if !proto.Equal(resp.GetDeniedResponse(), want.DeniedResponse) || resp.DynamicMetadata != nil {
		t.Errorf("defaults: %v", protojson.Format(resp))
	}
}

func decisionFromJSONResponse(t *testing.T, js string) (*authv3.CheckResponse, bool, error) {
	t.Helper()
	return decisionToResponse(decisionFromJSON(t, js))
}

func TestResultErrors(t *testing.T) {
	for _, js := range []string{
		`"yes"`,
		`null`,
		`{}`,
		`{"allowed": "true"}`,
		`{"allowed": true, "headers": "x"}`,
		`{"allowed": true, "headers": {"x": 1}}`,
		`{"allowed": true, "headers": {"x": ["a", 1]}}`,
		`{"allowed": true, "headers": [{"x": "a"}, "y"]}`,
		`{"allowed": true, "request_headers_to_remove": "x"}`,
		`{"allowed": true, "request_headers_to_remove": [1]}`,
		`{"allowed": true, "response_headers_to_add": 1}`,
		`{"allowed": true, "query_parameters_to_set": ["a"]}`,
		`{"allowed": true, "dynamic_metadata": "x"}`,
		`{"allowed": false, "http_status": "403"}`,
		`{"allowed": false, "http_status": 999}`,
		`{"allowed": false, "http_status": 306}`,
		`{"allowed": false, "http_status": 418}`, // Go knows it, Envoy's StatusCode enum does not
		`{"allowed": false, "http_status": 403.5}`,
		`{"allowed": false, "body": {"error": 1}}`,
	} {
		if _, _, err := decisionFromJSONResponse(t, js); err == nil {
			t.Errorf("%s: expected an error", js)
		}
	}
	// Fields that only apply to the other outcome are not looked at.
	for _, js := range []string{
		`{"allowed": true, "http_status": "x", "body": 1}`,
		`{"allowed": false, "request_headers_to_remove": 1, "response_headers_to_add": 1}`,
	} {
		if _, _, err := decisionFromJSONResponse(t, js); err != nil {
			t.Errorf("%s: %v", js, err)
		}
	}
}
