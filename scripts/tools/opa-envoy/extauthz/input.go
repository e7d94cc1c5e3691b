package extauthz

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/url"
	"strconv"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// The input document, as upstream builds it for a v3 CheckRequest:
//
//	attributes        the CheckRequest's attributes, walked field by field with the fields' JSON
//	                  names (camelCase: contextExtensions, metadataContext.filterMetadata, ...).
//	                  This is NOT protojson: int64/uint64 stay numbers, enums are their numbers,
//	                  bytes are base64 strings, Timestamp/Duration/wrappers/Any are plain objects
//	                  ({seconds, nanos}, {value}, {typeUrl, value}); only google.protobuf.Struct
//	                  (filter metadata) becomes the JSON object it holds. Unset fields are absent.
//	version           {ext_authz: v3, encoding: protojson}
//	parsed_path       the path before "?", percent-decoded, split on "/" ("/" gives [""])
//	parsed_query      {name: [values...]}
//	parsed_body       JSON, form, multipart and (with proto-descriptor) gRPC bodies; else null
//	truncated_body    whether Envoy sent only part of the body
//	source_principal  attributes.source.principal, when set
//
// parsed_body and truncated_body are absent with skip-request-body-parse.

// buildInput converts a CheckRequest to the input document. An error means the request cannot be
// parsed (bad percent-encoding, a JSON body that is not JSON, ...): upstream answers those with 400.
func buildInput(req *authv3.CheckRequest, cfg *Config, logger logging.Logger) (map[string]any, error) {
	input := messageToMap(req.ProtoReflect())
	input["version"] = map[string]any{"ext_authz": "v3", "encoding": "protojson"}

	httpReq := req.GetAttributes().GetRequest().GetHttp()
	segments, query, err := splitPath(httpReq.GetPath())
	if err != nil {
		return nil, err
	}
	input["parsed_path"] = segments
	input["parsed_query"] = query

	if !cfg.SkipRequestBodyParse {
		body, truncated, err := parseBody(logger, httpReq.GetHeaders(), httpReq.GetBody(), httpReq.GetRawBody(), segments, cfg.protos)
		if err != nil {
			return nil, err
		}
		input["parsed_body"] = body
		input["truncated_body"] = truncated
	}

	if p := req.GetAttributes().GetSource().GetPrincipal(); p != "" {
		input["source_principal"] = p
	}
	return input, nil
}

// messageToMap walks a message's populated fields, keyed by their JSON names.
func messageToMap(msg protoreflect.Message) map[string]any {
	if s, ok := msg.Interface().(*structpb.Struct); ok {
		return s.AsMap()
	}
	out := make(map[string]any, msg.Descriptor().Fields().Len())
	msg.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		out[fd.JSONName()] = fieldToAny(fd, v)
		return true
	})
	return out
}

func fieldToAny(fd protoreflect.FieldDescriptor, v protoreflect.Value) any {
	switch {
	case fd.IsMap():
		valueField := fd.MapValue()
		m := make(map[string]any, v.Map().Len())
		v.Map().Range(func(k protoreflect.MapKey, e protoreflect.Value) bool {
			m[k.String()] = singleToAny(valueField, e)
			return true
		})
		return m
	case fd.IsList():
		l := v.List()
		out := make([]any, l.Len())
		for i := range out {
			out[i] = singleToAny(fd, l.Get(i))
		}
		return out
	default:
		return singleToAny(fd, v)
	}
}

// singleToAny converts one (non-repeated) value: messages recursively, scalars as the Go value the
// protobuf runtime holds (int64, uint32, protoreflect.EnumNumber, []byte, ...), which OPA turns into
// numbers and (for bytes) base64 strings.
func singleToAny(fd protoreflect.FieldDescriptor, v protoreflect.Value) any {
	if k := fd.Kind(); k == protoreflect.MessageKind || k == protoreflect.GroupKind {
		return messageToMap(v.Message())
	}
	return v.Interface()
}

func splitPath(path string) ([]string, map[string]any, error) {
	rawPath, rawQuery, _ := strings.Cut(path, "?")
	decoded, err := url.PathUnescape(rawPath)
	if err != nil {
		return nil, nil, err
	}
	segments := strings.Split(strings.TrimLeft(decoded, "/"), "/")

	values, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, nil, err
	}
	query := make(map[string]any, len(values))
	for k, vs := range values {
		query[k] = vs
	}
	return segments, query, nil
}

var errBadGRPCPath = errors.New("invalid parsed path")

// parseBody returns the parsed body (nil when there is none or its type is not parsed) and whether
// Envoy truncated it. Content types are matched by substring, as upstream does.
func parseBody(logger logging.Logger, headers map[string]string, body string, raw []byte, segments []string, protos *protoregistry.Files) (any, bool, error) {
	// Set by Envoy when the body was cut at with_request_body.max_request_bytes (works without a
	// content-length too: HTTP/2, chunked).
	if headers["x-envoy-auth-partial-body"] == "true" {
		return nil, true, nil
	}
	ctype, ok := headers["content-type"]
	if !ok {
		logger.Debug("no content-type header supplied, performing no body parsing")
		return nil, false, nil
	}
	payload := body
	if payload == "" {
		payload = string(raw)
	}

	switch {
	case strings.Contains(ctype, "application/json"):
		if payload == "" {
			return nil, false, nil
		}
		if cut, err := shorterThanDeclared(headers, len(payload)); err != nil || cut {
			return nil, cut, err
		}
		var v any
		if err := util.UnmarshalJSON([]byte(payload), &v); err != nil {
			return nil, false, err
		}
		return v, false, nil

	case strings.Contains(ctype, "application/grpc"):
		if protos == nil {
			return nil, false, nil
		}
		if len(raw) == 0 { // Envoy without with_request_body.pack_as_bytes
			logger.Debug("no rawBody field sent")
			return nil, false, nil
		}
		if len(segments) != 2 { // a gRPC call is POST /package.Service/Method
			return nil, false, errBadGRPCPath
		}
		return decodeGRPCBody(logger, raw, segments[0], segments[1], protos)

	case strings.Contains(ctype, "application/x-www-form-urlencoded"):
		if payload == "" {
			return nil, false, nil
		}
		if cut, err := shorterThanDeclared(headers, len(payload)); err != nil || cut {
			return nil, cut, err
		}
		values, err := url.ParseQuery(payload)
		if err != nil {
			return nil, false, err
		}
		form := make(map[string]any, len(values))
		for k, vs := range values {
			form[k] = vs
		}
		return form, false, nil

	case strings.Contains(ctype, "multipart/form-data"):
		if payload == "" {
			return nil, false, nil
		}
		if cut, err := shorterThanDeclared(headers, len(payload)); err != nil || cut {
			return nil, cut, err
		}
		return parseMultipart(ctype, payload)

	default:
		logger.Debug("content-type: %s parsing not supported", ctype)
		return nil, false, nil
	}
}

// shorterThanDeclared reports whether the body is shorter than its content-length header says.
func shorterThanDeclared(headers map[string]string, have int) (bool, error) {
	cl, ok := headers["content-length"]
	if !ok {
		return false, nil
	}
	n, err := strconv.ParseInt(cl, 10, 64)
	if err != nil {
		return false, err
	}
	return n != -1 && n > int64(have), nil
}

// parseMultipart gives {field: [value, ...]}: parts declared application/json are parsed, the
// others are strings; parts without a form name are skipped.
func parseMultipart(ctype, payload string) (any, bool, error) {
	_, params, err := mime.ParseMediaType(ctype)
	if err != nil {
		return nil, false, err
	}
	boundary, ok := params["boundary"]
	if !ok {
		return nil, false, nil
	}
	fields := map[string]any{}
	reader := multipart.NewReader(strings.NewReader(payload), boundary)
	for {
		part, err := reader.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, false, err
		}
		name := part.FormName()
		if name == "" {
			continue
		}
		data, err := io.ReadAll(part)
		if err != nil {
			return nil, false, err
		}
		var value any = string(data)
		if strings.Contains(part.Header.Get("Content-Type"), "application/json") {
			if err := util.UnmarshalJSON(data, &value); err != nil {
				return nil, false, err
			}
		}
		list, _ := fields[name].([]any)
		fields[name] = append(list, value)
	}
	return fields, false, nil
}

// decodeGRPCBody decodes the first length-prefixed message of a gRPC request body with the
// method's input type from the descriptor set, as protojson. Unknown services or methods and
// compressed messages give no parsed body.
func decodeGRPCBody(logger logging.Logger, raw []byte, service, method string, protos *protoregistry.Files) (any, bool, error) {
	const prefix = 5 // 1 byte compressed flag + 4 bytes big-endian length
	if len(raw) < prefix {
		return nil, false, errors.New("less than 5 bytes")
	}
	if raw[0] != 0 {
		logger.Debug("gRPC payload compression not supported")
		return nil, false, nil
	}
	size := binary.BigEndian.Uint32(raw[1:prefix])
	if uint64(size) > uint64(len(raw)-prefix) {
		return nil, true, nil
	}
	frame := raw[prefix : prefix+int(size)]

	desc, err := protos.FindDescriptorByName(protoreflect.FullName(service))
	if err != nil {
		logger.WithFields(map[string]any{"err": err}).Debug("could not find service")
		return nil, false, nil
	}
	svc, ok := desc.(protoreflect.ServiceDescriptor)
	if !ok {
		logger.WithFields(map[string]any{"err": fmt.Sprintf("%s is not a service", service)}).Debug("could not find service")
		return nil, false, nil
	}
	m := svc.Methods().ByName(protoreflect.Name(method))
	if m == nil || m.IsStreamingClient() {
		logger.WithFields(map[string]any{"method": method}).Debug("could not find message")
		return nil, false, nil
	}

	msg := dynamicpb.NewMessage(m.Input())
	if err := proto.Unmarshal(frame, msg); err != nil {
		return nil, false, err
	}
	js, err := protojson.Marshal(msg)
	if err != nil {
		return nil, false, err
	}
	var v any
	if err := util.UnmarshalJSON(js, &v); err != nil {
		return nil, false, err
	}
	return v, false, nil
}
