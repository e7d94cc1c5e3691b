package extauthz

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// The decision (the value of the configured rule) is either a boolean or an object:
//
//	allowed                     boolean, required
//	headers                     {name: value | [values]} or a list of such objects: request
//	                            headers added upstream when allowed, response headers when denied
//	request_headers_to_remove   [names]                                       (allowed only)
//	response_headers_to_add     like headers: added to the response to the client (allowed only)
//	query_parameters_to_set     {name: value | [values]}                      (allowed only)
//	query_parameters_to_remove  [names]                                       (allowed only)
//	http_status                 number, default 403                           (denied only)
//	body                        string                                        (denied only)
//	dynamic_metadata            object, emitted by Envoy as filter metadata
//
// A boolean gives a bare status (OK or PERMISSION_DENIED) without an HTTP response part. A
// malformed decision is an error, which the Check answers as a gRPC error (Envoy then fails closed).

// decisionToResponse maps a decision to Envoy's CheckResponse. The decision_id metadata and
// dry-run are applied by the caller.
func decisionToResponse(decision any) (*authv3.CheckResponse, bool, error) {
	allowed, err := decisionAllowed(decision)
	if err != nil {
		return nil, false, fmt.Errorf("failed to get response status: %w", err)
	}
	resp := &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)}}
	if allowed {
		resp.Status.Code = int32(code.Code_OK)
	}
	obj, isObject := decision.(map[string]any)
	if !isObject {
		return resp, allowed, nil
	}

	headers, err := headerField(obj, "headers")
	if err != nil {
		return nil, false, fmt.Errorf("failed to get response headers: %w", err)
	}
	if resp.DynamicMetadata, err = metadataField(obj); err != nil {
		return nil, false, fmt.Errorf("failed to get dynamic metadata: %w", err)
	}

	if allowed {
		ok := &authv3.OkHttpResponse{Headers: headers}
		if ok.HeadersToRemove, err = stringListField(obj, "request_headers_to_remove"); err != nil {
			return nil, false, fmt.Errorf("failed to get request headers to remove: %w", err)
		}
		if ok.ResponseHeadersToAdd, err = headerField(obj, "response_headers_to_add"); err != nil {
			return nil, false, fmt.Errorf("failed to get response headers to send to client: %w", err)
		}
		if ok.QueryParametersToRemove, err = stringListField(obj, "query_parameters_to_remove"); err != nil {
			return nil, false, fmt.Errorf("failed to get request query parameters to remove: %w", err)
		}
		if ok.QueryParametersToSet, err = queryParamsField(obj); err != nil {
			return nil, false, fmt.Errorf("failed to get request query parameters to set: %w", err)
		}
		resp.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: ok}
		return resp, true, nil
	}

	denied := &authv3.DeniedHttpResponse{Headers: headers}
	if denied.Body, err = bodyField(obj); err != nil {
		return nil, false, fmt.Errorf("failed to get response body: %w", err)
	}
	if denied.Status, err = statusField(obj); err != nil {
		return nil, false, fmt.Errorf("failed to get response http status: %w", err)
	}
	resp.HttpResponse = &authv3.CheckResponse_DeniedResponse{DeniedResponse: denied}
	return resp, false, nil
}

func decisionAllowed(decision any) (bool, error) {
	switch d := decision.(type) {
	case bool:
		return d, nil
	case map[string]any:
		v, ok := d["allowed"]
		if !ok {
			return false, errors.New(`unable to determine evaluation result due to missing "allowed" key`)
		}
		b, ok := v.(bool)
		if !ok {
			return false, fmt.Errorf("type assertion error, expected allowed to be of type 'boolean' but got '%T'", v)
		}
		return b, nil
	default:
		return false, fmt.Errorf("illegal value for policy evaluation result: %T", decision)
	}
}

func stringListField(obj map[string]any, name string) ([]string, error) {
	v, ok := obj[name]
	if !ok {
		return nil, nil
	}
	switch l := v.(type) {
	case []string:
		return l, nil
	case []any:
		out := make([]string, 0, len(l))
		for _, e := range l {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("type assertion error, expected %s value to be of type 'string' but got '%T'", name, e)
			}
			out = append(out, s)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("type assertion error, expected %s to be of type '[]string' but got '%T'", name, v)
	}
}

// headerField reads {name: value | [values]} or a list of such objects. Each value becomes one
// HeaderValueOption with only the header set (no append flag), as upstream sends them; names are
// emitted in sorted order (upstream's order is Go's map order, i.e. random).
func headerField(obj map[string]any, name string) ([]*corev3.HeaderValueOption, error) {
	v, ok := obj[name]
	if !ok {
		return nil, nil
	}
	var groups []map[string]any
	switch x := v.(type) {
	case map[string]any:
		groups = []map[string]any{x}
	case []any:
		for _, e := range x {
			m, ok := e.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("type assertion error, expected headers to be of type 'object' but got '%T'", e)
			}
			groups = append(groups, m)
		}
	default:
		return nil, fmt.Errorf("type assertion error, expected headers to be of type 'object' but got '%T'", v)
	}

	var out []*corev3.HeaderValueOption
	for _, group := range groups {
		for _, key := range sortedKeys(group) {
			values, err := stringOrStrings(group[key])
			if err != nil {
				return nil, fmt.Errorf("header '%s': %w", key, err)
			}
			for _, val := range values {
				out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: key, Value: val}})
			}
		}
	}
	return out, nil
}

func queryParamsField(obj map[string]any) ([]*corev3.QueryParameter, error) {
	v, ok := obj["query_parameters_to_set"]
	if !ok {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("type assertion error, expected query_parameters_to_set to be a map but got '%T'", v)
	}
	var out []*corev3.QueryParameter
	for _, key := range sortedKeys(m) {
		values, err := stringOrStrings(m[key])
		if err != nil {
			return nil, fmt.Errorf("query parameter '%s': %w", key, err)
		}
		for _, val := range values {
			out = append(out, &corev3.QueryParameter{Key: key, Value: val})
		}
	}
	return out, nil
}

func stringOrStrings(v any) ([]string, error) {
	switch x := v.(type) {
	case string:
		return []string{x}, nil
	case []string:
		return x, nil
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("invalid value type %T", e)
			}
			out = append(out, s)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("expected a string or a list of strings but got '%T'", v)
	}
}

func metadataField(obj map[string]any) (*structpb.Struct, error) {
	v, ok := obj["dynamic_metadata"]
	if !ok {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("type assertion error, expected dynamic_metadata to be of type 'object' but got '%T'", v)
	}
	return structpb.NewStruct(m) // numbers arrive as json.Number, which structpb accepts
}

func bodyField(obj map[string]any) (string, error) {
	v, ok := obj["body"]
	if !ok {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("type assertion error, expected body to be of type 'string' but got '%T'", v)
	}
	return s, nil
}

// statusField is http_status (default 403); it must be a status code both Go and Envoy know.
func statusField(obj map[string]any) (*typev3.HttpStatus, error) {
	v, ok := obj["http_status"]
	if !ok {
		return &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden}, nil
	}
	num, ok := v.(json.Number)
	if !ok {
		return nil, fmt.Errorf("type assertion error, expected http_status to be of type 'number' but got '%T'", v)
	}
	n, err := num.Int64()
	if err != nil {
		return nil, fmt.Errorf("error converting JSON number to int: %v", err)
	}
	if http.StatusText(int(n)) == "" {
		return nil, fmt.Errorf("invalid HTTP status code %v", n)
	}
	if _, known := typev3.StatusCode_name[int32(n)]; !known {
		return nil, fmt.Errorf("invalid HTTP status code %v", n)
	}
	return &typev3.HttpStatus{Code: typev3.StatusCode(n)}, nil
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
