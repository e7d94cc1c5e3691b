package extauthz

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	logtest "github.com/open-policy-agent/opa/v1/logging/test"
	"github.com/open-policy-agent/opa/v1/rego"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// holds evaluates a Rego expression over the input, as a policy would see it.
func holds(t *testing.T, input map[string]any, expr string) bool {
	t.Helper()
	v, err := ast.InterfaceToValue(input)
	if err != nil {
		t.Fatalf("input to value: %v", err)
	}
	rs, err := rego.New(rego.Query(expr), rego.ParsedInput(v)).Eval(context.Background())
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return rs.Allowed()
}

func mustHold(t *testing.T, input map[string]any, exprs ...string) {
	t.Helper()
	for _, e := range exprs {
		if !holds(t, input, e) {
			v, _ := ast.InterfaceToValue(input)
			t.Errorf("does not hold: %s\ninput: %v", e, v)
		}
	}
}

func testConfig(t *testing.T, raw string) *Config {
	t.Helper()
	cfg, err := ParseConfig([]byte(raw))
	if err != nil {
		t.Fatalf("config %s: %v", raw, err)
	}
	return cfg
}

func httpCheck(method, path string, headers map[string]string, body string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Headers: headers, Body: body,
		}},
	}}
}

func TestInputAttributesUseJSONNamesAndPlainValues(t *testing.T) {
	filter, err := structpb.NewStruct(map[string]any{"sandbox": map[string]any{"sub": "sbx-1", "exp": 1700000600, "tier": "standard"}})
	if err != nil {
		t.Fatal(err)
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Protocol: corev3.SocketAddress_UDP, Address: "10.0.0.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 4242},
			}}},
			Principal: "spiffe://agentd/client",
		},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(time.Unix(1700000000, 5)),
			Http: &authv3.AttributeContext_HttpRequest{
				Id: "r1", Method: "GET", Path: "/api/v1/a%20b?x=1&x=2&y", Host: "gateway", Scheme: "http",
				Protocol: "HTTP/1.1", Size: 1234567890123,
				Headers: map[string]string{"x-api-key": "k", ":path": "/api/v1/a%20b?x=1&x=2&y"},
				RawBody: []byte("raw"),
			},
		},
		ContextExtensions: map[string]string{"policy": "gateway"},
		MetadataContext:   &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.filters.http.jwt_authn": filter}},
	}}
	input, err := buildInput(req, testConfig(t, `{}`), logtest.New())
	if err != nil {
		t.Fatal(err)
	}
	mustHold(t, input,
		`input.attributes.contextExtensions == {"policy": "gateway"}`,
		`input.attributes.metadataContext.filterMetadata["envoy.filters.http.jwt_authn"].sandbox == {"sub": "sbx-1", "exp": 1700000600, "tier": "standard"}`,
		`input.attributes.request.http.headers["x-api-key"] == "k"`,
		`input.attributes.request.http.method == "GET"`,
		// int64 is a number (protojson would give the string "1234567890123")
		`input.attributes.request.http.size == 1234567890123`,
		// bytes are base64
		`input.attributes.request.http.rawBody == "cmF3"`,
		// a Timestamp is its fields (protojson would give an RFC 3339 string)
		`input.attributes.request.time == {"seconds": 1700000000, "nanos": 5}`,
		// enums are numbers, uint32 numbers; unset fields are absent
		`input.attributes.source.address.socketAddress == {"protocol": 1, "address": "10.0.0.7", "portValue": 4242}`,
		`not input.attributes.destination`,
		`input.attributes.source.principal == "spiffe://agentd/client"`,
		`input.source_principal == "spiffe://agentd/client"`,
		`input.version == {"ext_authz": "v3", "encoding": "protojson"}`,
		`input.parsed_path == ["api", "v1", "a b"]`,
		`input.parsed_query == {"x": ["1", "2"], "y": [""]}`,
		`input.parsed_body == null`, // no content-type
		`input.truncated_body == false`,
		`count(object.keys(input)) == 7`,
	)
}

func TestInputPathEdgeCases(t *testing.T) {
	cfg := testConfig(t, `{}`)
	for path, want := range map[string]string{
		"/":        `input.parsed_path == [""]`,
		"":         `input.parsed_path == [""]`,
		"//a/":     `input.parsed_path == ["a", ""]`,
		"/a?":      `input.parsed_query == {}`,
		"/a%2Fb/c": `input.parsed_path == ["a", "b", "c"]`,
	} {
		input, err := buildInput(httpCheck("GET", path, nil, ""), cfg, logtest.New())
		if err != nil {
			t.Fatalf("%q: %v", path, err)
		}
		mustHold(t, input, want)
	}
	for _, bad := range []string{"/a%zz", "/a?x=%zz", "/a?x=1;y=2"} {
		if _, err := buildInput(httpCheck("GET", bad, nil, ""), cfg, logtest.New()); err == nil {
			t.Errorf("%q: expected a parse error", bad)
		}
	}
}

func TestInputBodies(t *testing.T) {
	cfg := testConfig(t, `{}`)
	const boundary = "XyZ"
	multipartBody := "--XyZ\r\nContent-Disposition: form-data; name=\"meta\"\r\nContent-Type: application/json\r\n\r\n{\"a\": [1, 2]}\r\n" +
		"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n" +
		"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nagain\r\n--XyZ--\r\n"
	cases := []struct {
		name    string
		headers map[string]string
		body    string
		raw     string
		want    []string
	}{
		{"json", map[string]string{"content-type": "application/json; charset=utf-8"}, `{"tier": "default", "n": 1.5e3}`, "",
			[]string{`input.parsed_body == {"tier": "default", "n": 1500}`, `input.truncated_body == false`}},
		{"json from raw_body", map[string]string{"content-type": "application/json"}, "", `[1, "x"]`,
			[]string{`input.parsed_body == [1, "x"]`}},
		{"json shorter than content-length", map[string]string{"content-type": "application/json", "content-length": "100"}, `{"a":`, "",
			[]string{`input.parsed_body == null`, `input.truncated_body == true`}},
		{"json with matching content-length", map[string]string{"content-type": "application/json", "content-length": "2"}, `{}`, "",
			[]string{`input.parsed_body == {}`, `input.truncated_body == false`}},
		{"partial body header", map[string]string{"content-type": "application/json", "x-envoy-auth-partial-body": "true"}, `{"a": 1}`, "",
			[]string{`input.parsed_body == null`, `input.truncated_body == true`}},
		{"empty json", map[string]string{"content-type": "application/json"}, "", "",
			[]string{`input.parsed_body == null`, `input.truncated_body == false`}},
		{"form", map[string]string{"content-type": "application/x-www-form-urlencoded"}, "a=1&a=2&b=x%20y", "",
			[]string{`input.parsed_body == {"a": ["1", "2"], "b": ["x y"]}`}},
		{"multipart", map[string]string{"content-type": "multipart/form-data; boundary=" + boundary}, multipartBody, "",
			[]string{`input.parsed_body == {"meta": [{"a": [1, 2]}], "note": ["hello", "again"]}`}},
		{"multipart without boundary", map[string]string{"content-type": "multipart/form-data"}, multipartBody, "",
			[]string{`input.parsed_body == null`}},
		{"text", map[string]string{"content-type": "text/plain"}, "hello", "",
			[]string{`input.parsed_body == null`, `input.truncated_body == false`}},
		{"grpc without proto-descriptor", map[string]string{"content-type": "application/grpc"}, "", "\x00\x00\x00\x00\x00",
			[]string{`input.parsed_body == null`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httpCheck("POST", "/api/v1/sandboxes", tc.headers, tc.body)
			req.Attributes.Request.Http.RawBody = []byte(tc.raw)
			input, err := buildInput(req, cfg, logtest.New())
			if err != nil {
				t.Fatal(err)
			}
			mustHold(t, input, tc.want...)
		})
	}

	for name, headers := range map[string]map[string]string{
		"not json":               {"content-type": "application/json"},
		"bad content-length":     {"content-type": "application/json", "content-length": "many"},
		"multipart bad boundary": {"content-type": "multipart/form-data; boundary=\"unterminated"},
	} {
		if _, err := buildInput(httpCheck("POST", "/", headers, "{not json"), cfg, logtest.New()); err == nil {
			t.Errorf("%s: expected a parse error", name)
		}
	}
}

func TestInputSkipBodyParse(t *testing.T) {
	req := httpCheck("POST", "/x", map[string]string{"content-type": "application/json"}, "{not json")
	input, err := buildInput(req, testConfig(t, `{"skip-request-body-parse": true}`), logtest.New())
	if err != nil {
		t.Fatal(err)
	}
	mustHold(t, input, `not input.parsed_body`, `not "parsed_body" in object.keys(input)`, `not "truncated_body" in object.keys(input)`)
}

// writeDescriptorSet writes the descriptor set of a file and everything it imports.
func writeDescriptorSet(t *testing.T, fd protoreflect.FileDescriptor) string {
	t.Helper()
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(protoreflect.FileDescriptor)
	add = func(f protoreflect.FileDescriptor) {
		if seen[f.Path()] {
			return
		}
		seen[f.Path()] = true
		imports := f.Imports()
		for i := 0; i < imports.Len(); i++ {
			add(imports.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(f))
	}
	add(fd)
	raw, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "set.pb")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func grpcFrame(t *testing.T, m proto.Message) []byte {
	t.Helper()
	msg, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(msg)))
	return append(frame, msg...)
}

func TestInputGRPCBodyWithProtoDescriptor(t *testing.T) {
	// The Authorization service itself serves as the gRPC API whose request body is decoded.
	set := writeDescriptorSet(t, authv3.File_envoy_service_auth_v3_external_auth_proto)
	cfg := testConfig(t, `{"proto-descriptor": "`+set+`"}`)
	inner := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{ContextExtensions: map[string]string{"k": "v"}}}
	frame := grpcFrame(t, inner)

	check := func(path string, raw []byte) (map[string]any, error) {
		req := httpCheck("POST", path, map[string]string{"content-type": "application/grpc"}, "")
		req.Attributes.Request.Http.RawBody = raw
		return buildInput(req, cfg, logtest.New())
	}
	input, err := check("/envoy.service.auth.v3.Authorization/Check", frame)
	if err != nil {
		t.Fatal(err)
	}
	mustHold(t, input, `input.parsed_body == {"attributes": {"contextExtensions": {"k": "v"}}}`, `input.truncated_body == false`)

	input, err = check("/envoy.service.auth.v3.Authorization/Check", frame[:len(frame)-1])
	if err != nil {
		t.Fatal(err)
	}
	mustHold(t, input, `input.parsed_body == null`, `input.truncated_body == true`)

	for _, path := range []string{"/no.such.Service/Check", "/envoy.service.auth.v3.Authorization/Nope"} {
		input, err = check(path, frame)
		if err != nil {
			t.Fatal(err)
		}
		mustHold(t, input, `input.parsed_body == null`)
	}
	if _, err := check("/a/b/c", frame); err == nil {
		t.Error("a gRPC body on a path that is not /service/method should be a parse error")
	}
	if _, err := check("/envoy.service.auth.v3.Authorization/Check", []byte{0, 0}); err == nil {
		t.Error("a body shorter than the gRPC frame prefix should be a parse error")
	}
}

func TestConfig(t *testing.T) {
	cfg := testConfig(t, `{}`)
	if cfg.Addr != ":9191" || cfg.Path != "envoy/authz/allow" || cfg.QueryString() != "data.envoy.authz.allow" {
		t.Errorf("defaults: %+v %s", cfg, cfg.QueryString())
	}
	if cfg.GRPCMaxRecvMsgSize != 4<<20 || cfg.DryRun || cfg.EnableReflection || cfg.SkipRequestBodyParse {
		t.Errorf("defaults: %+v", cfg)
	}
	if got := testConfig(t, `{"path": "/agentd/envoy/authz/result"}`).QueryString(); got != "data.agentd.envoy.authz.result" {
		t.Errorf("path: %s", got)
	}
	if got := testConfig(t, `{"path": "a/0/b-c"}`).QueryString(); got != `data.a[0]["b-c"]` {
		t.Errorf("path with index: %s", got)
	}
	if got := testConfig(t, `{"query": "data.x.allow"}`); got.QueryString() != "data.x.allow" || got.Path != "" {
		t.Errorf("query: %s %q", got.QueryString(), got.Path)
	}
	for _, bad := range []string{`{"path": "a", "query": "data.a"}`, `{"query": "data.a["}`, `{"proto-descriptor": "/nonexistent"}`, `{"addr": 5}`} {
		if _, err := ParseConfig([]byte(bad)); err == nil {
			t.Errorf("%s: expected an error", bad)
		}
	}
}
