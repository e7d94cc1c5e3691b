// Package extauthz is an OPA plugin that serves Envoy's External Authorization API
// (envoy.service.auth.v3.Authorization/Check over gRPC) by evaluating a Rego rule. It is written
// for the agentd project as a stand-in for github.com/open-policy-agent/opa-envoy-plugin (which our
// Go module proxy refuses to serve) and keeps that plugin's configuration, input document, decision
// format, gRPC answers and decision-log entries, so that the same Rego runs unchanged on the
// upstream openpolicyagent/opa:<version>-envoy image. See docs/toolchain/opa.md.
package extauthz

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// Names the plugin is registered under in OPA's `plugins` configuration section. The second is the
// old name upstream still accepts.
const (
	PluginName       = "envoy_ext_authz_grpc"
	LegacyPluginName = "envoy.ext_authz.grpc"
)

const (
	defaultAddr = ":9191"
	defaultPath = "envoy/authz/allow"
	// grpc-go's own defaults, stated explicitly as upstream does.
	defaultMaxRecvMsgSize = 4 << 20
	defaultMaxSendMsgSize = math.MaxInt32
)

// Buckets of grpc_request_duration_seconds (upstream's defaults).
var defaultDurationBuckets = []float64{1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 3e-3, 5e-3, 0.1, 1}

// Config is plugins.envoy_ext_authz_grpc in OPA's configuration file; the keys are upstream's.
type Config struct {
	Addr                              string    `json:"addr"`
	Path                              string    `json:"path"`
	Query                             string    `json:"query"` // deprecated upstream in favour of path
	DryRun                            bool      `json:"dry-run"`
	EnableReflection                  bool      `json:"enable-reflection"`
	ProtoDescriptor                   string    `json:"proto-descriptor"`
	GRPCMaxRecvMsgSize                int       `json:"grpc-max-recv-msg-size"`
	GRPCMaxSendMsgSize                int       `json:"grpc-max-send-msg-size"`
	SkipRequestBodyParse              bool      `json:"skip-request-body-parse"`
	EnablePerformanceMetrics          bool      `json:"enable-performance-metrics"`
	GRPCRequestDurationSecondsBuckets []float64 `json:"grpc-request-duration-seconds-buckets"`

	// agentd's extensions (upstream's plugin ignores these keys and behaves as with their zero
	// values: no cache, decision logs written before the answer).
	DecisionCache    *DecisionCacheConfig `json:"decision-cache"`
	DecisionLogQueue int                  `json:"decision-log-queue"` // entries; 0: write before answering

	query  ast.Body             // what is evaluated for each Check
	protos *protoregistry.Files // from proto-descriptor: decodes gRPC request bodies
}

// DecisionCacheConfig is plugins.envoy_ext_authz_grpc.decision-cache (see decisionCache).
type DecisionCacheConfig struct {
	// MaxEntries bounds the cache; 0 turns it off.
	MaxEntries int `json:"max-entries"`
	// MaxAgeSeconds bounds how long an entry is reused (besides generations and cache_until_ns).
	MaxAgeSeconds float64 `json:"max-age-seconds"`
	// Input lists the paths of the input document the policy reads, each as its keys, e.g.
	// ["attributes", "request", "http", "method"]. The policy is evaluated on exactly these.
	Input [][]string `json:"input"`
}

func (c *DecisionCacheConfig) validate() error {
	if c == nil || c.MaxEntries == 0 {
		return nil
	}
	if c.MaxEntries < 0 {
		return errors.New("decision-cache.max-entries must be 0 (off) or positive")
	}
	if c.MaxAgeSeconds <= 0 {
		return errors.New("decision-cache.max-age-seconds must be positive")
	}
	if len(c.Input) == 0 {
		return errors.New("decision-cache.input must list the input paths the policy reads")
	}
	for i, path := range c.Input {
		if len(path) == 0 {
			return fmt.Errorf("decision-cache.input[%d] is empty", i)
		}
		for _, seg := range path {
			if seg == "" {
				return fmt.Errorf("decision-cache.input[%d] has an empty key", i)
			}
		}
	}
	return nil
}

// ParseConfig applies the defaults to the raw plugin configuration and validates it.
func ParseConfig(raw []byte) (*Config, error) {
	cfg := &Config{
		Addr:                              defaultAddr,
		GRPCMaxRecvMsgSize:                defaultMaxRecvMsgSize,
		GRPCMaxSendMsgSize:                defaultMaxSendMsgSize,
		GRPCRequestDurationSecondsBuckets: defaultDurationBuckets,
	}
	if len(raw) > 0 {
		if err := util.Unmarshal(raw, cfg); err != nil {
			return nil, err
		}
	}
	if cfg.Path != "" && cfg.Query != "" {
		return nil, errors.New(`invalid config: specify a value for only the "path" field`)
	}

	text := cfg.Query
	if text == "" {
		if cfg.Path == "" {
			cfg.Path = defaultPath
		}
		text = dataRef(cfg.Path).String()
	}
	body, err := ast.ParseBody(text)
	if err != nil {
		return nil, err
	}
	cfg.query = body

	if err := cfg.DecisionCache.validate(); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	if cfg.DecisionLogQueue < 0 {
		return nil, errors.New("invalid config: decision-log-queue must be 0 (write before answering) or positive")
	}

	if cfg.ProtoDescriptor != "" {
		files, err := loadDescriptorSet(cfg.ProtoDescriptor)
		if err != nil {
			return nil, fmt.Errorf("proto-descriptor %s: %w", cfg.ProtoDescriptor, err)
		}
		cfg.protos = files
	}
	return cfg, nil
}

// QueryString is the Rego query the plugin evaluates, e.g. data.envoy.authz.allow.
func (c *Config) QueryString() string { return c.query.String() }

// dataRef turns "a/b/0/c" into data.a.b[0].c: empty segments are skipped and segments that are
// integers become numbers (as upstream does).
func dataRef(path string) ast.Ref {
	ref := ast.Ref{ast.DefaultRootDocument}
	for _, seg := range strings.Split(path, "/") {
		if seg == "" {
			continue
		}
		if n, err := strconv.Atoi(seg); err == nil {
			ref = append(ref, ast.IntNumberTerm(n))
		} else {
			ref = append(ref, ast.StringTerm(seg))
		}
	}
	return ref
}

// loadDescriptorSet reads a serialized google.protobuf.FileDescriptorSet (`protoc
// --descriptor_set_out --include_imports`).
func loadDescriptorSet(path string) (*protoregistry.Files, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	set := &descriptorpb.FileDescriptorSet{}
	if err := proto.Unmarshal(raw, set); err != nil {
		return nil, err
	}
	return protodesc.NewFiles(set)
}
