package extauthz

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/uuid"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"
	"github.com/open-policy-agent/opa/v1/topdown/print"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// Internal error codes: error_counter's reason label and the prefix of a 400 answer's body
// (upstream's codes).
const (
	errStartTxn         = "start_txn_error"
	errRequestParse     = "request_parse_error"
	errCheckTimeout     = "check_request_timeout"
	errCheckCancelled   = "check_request_cancelled"
	errUnknownContext   = "unknown_context_error"
	errInputParse       = "input_parse_error"
	errEval             = "envoyauth_eval_error"
	errResult           = "envoyauth_result_error"
	errUnknownLogFailed = "unknown_log_error"
)

// failure is a check that produced no answer: Check returns err itself, which gRPC sends as status
// UNKNOWN with err's message, and Envoy applies its failure mode (we run failure_mode_allow:
// false, so the request is refused).
type failure struct {
	code string
	err  error
}

func (f *failure) Error() string { return f.code + ": " + f.err.Error() }

// check is the state of one Check call, from the decision id to the decision-log entry.
type check struct {
	plugin  *Plugin
	cfg     *Config
	perf    *perfMetrics
	logger  logging.Logger
	started time.Time

	id      string          // decision id: decision log, dynamic metadata, OPA's logs
	metrics metrics.Metrics // timers in the decision log
	txn     storage.Transaction

	cache  *decisionCache // nil: off
	logs   *logQueue      // nil: the entry is written before the answer
	cached bool           // the decision came from the cache

	input      map[string]any
	decision   any
	err        error // what the decision log records instead of a result
	failed     *failure
	ruleLabels []map[string]any
	ndb        builtins.NDBCache // logged only when OPA's nd_builtin_cache is on
	logNDB     bool
}

// Check implements envoy.service.auth.v3.Authorization/Check.
func (p *Plugin) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	cfg, perf, cache, logs := p.snapshot()
	c := &check{
		plugin:  p,
		cfg:     cfg,
		perf:    perf,
		cache:   cache,
		logs:    logs,
		logger:  p.manager.Logger(),
		started: time.Now(),
		id:      uuid.NewString(),
		metrics: metrics.New(),
	}
	c.metrics.Timer(metrics.ServerHandler).Start()

	resp := c.run(ctx, req)
	if st := c.finish(ctx); st != nil && resp != nil {
		resp.Status = st
	}
	if c.failed != nil {
		return resp, c.failed.err
	}
	return resp, nil
}

func (c *check) fail(code string, err error) *authv3.CheckResponse {
	c.err = err
	c.failed = &failure{code: code, err: err}
	return nil
}

func (c *check) run(ctx context.Context, req *authv3.CheckRequest) *authv3.CheckResponse {
	store := c.plugin.manager.Store
	// The cache generation is read before the transaction opens: a decision is never stored
	// under a generation newer than the data it was evaluated on.
	var generation uint64
	if c.cache != nil {
		generation = c.cache.generation.Load()
	}
	txn, err := store.NewTransaction(ctx, storage.TransactionParams{})
	if err != nil {
		c.logger.WithFields(map[string]any{"err": err}).Error("Unable to start new storage transaction.")
		return c.fail(errStartTxn, err)
	}
	c.txn = txn
	c.logger = c.logger.WithFields(map[string]any{"decision-id": c.id})

	input, err := buildInput(req, c.cfg, c.logger)
	if err != nil {
		// Answered, not failed: a 400 naming the problem (without decision_id, as upstream).
		c.err = err
		c.failed = nil
		f := &failure{code: errRequestParse, err: err}
		c.perf.countError(errRequestParse)
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED), Message: f.Error()},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_BadRequest},
				Body:   f.Error(),
			}},
		}
	}
	c.input = input

	if err := ctx.Err(); err != nil {
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			return c.fail(errCheckTimeout, fmt.Errorf("check request timed out before query execution: %w", err))
		case errors.Is(err, context.Canceled):
			return c.fail(errCheckCancelled, fmt.Errorf("check request explicitly cancelled before query execution: %w", err))
		default:
			return c.fail(errUnknownContext, fmt.Errorf("check request failed due to unknown context error: %w", err))
		}
	}

	if resp := c.decide(ctx, generation); resp != nil || c.failed != nil {
		return resp
	}
	resp, _, err := decisionToResponse(c.decision)
	if err != nil {
		return c.fail(errResult, err)
	}

	elapsed := time.Since(c.started)
	c.perf.observeCheck(elapsed.Seconds())
	if c.logger.GetLevel() == logging.Debug {
		c.logger.WithFields(map[string]any{
			"query":               c.cfg.QueryString(),
			"dry-run":             c.cfg.DryRun,
			"decision":            c.decision,
			"txn":                 c.txn.ID(),
			"metrics":             c.metrics.All(),
			"total_decision_time": elapsed,
		}).Debug("Returning policy decision.")
	}

	// Dry run: Envoy is told to allow; the decision log still shows what the policy said.
	if c.cfg.DryRun && resp.GetStatus().GetCode() != int32(code.Code_OK) {
		resp.Status = &rpcstatus.Status{Code: int32(code.Code_OK)}
		resp.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}
	}

	// The decision id reaches Envoy's access log as
	// %DYNAMIC_METADATA(envoy.filters.http.ext_authz:decision_id)%, for allowed and denied answers.
	if resp.DynamicMetadata == nil {
		resp.DynamicMetadata = &structpb.Struct{Fields: map[string]*structpb.Value{}}
	}
	resp.DynamicMetadata.Fields["decision_id"] = structpb.NewStringValue(c.id)
	return resp
}

// decide sets c.decision: from the decision cache when it holds one for this input, else by
// evaluating the policy (on the cached input paths only, when the cache is on). A non-nil answer
// (or c.failed) ends the check.
func (c *check) decide(ctx context.Context, generation uint64) *authv3.CheckResponse {
	evalInput := c.input
	var key [sha256.Size]byte
	keyed := false
	if c.cache != nil {
		projected := c.cache.project(c.input)
		var err error
		if key, err = c.cache.key(projected); err == nil {
			keyed = true
			if d, ok := c.cache.get(generation, key, time.Now()); ok {
				c.decision = d
				c.cached = true
				c.metrics.Counter("decision_cache_hit").Incr()
				c.plugin.cacheMetrics.lookups.WithLabelValues("hit").Inc()
				return nil
			}
			evalInput = projected
		}
	}
	value, err := ast.InterfaceToValue(evalInput)
	if err != nil {
		return c.fail(errInputParse, err)
	}
	if err := c.eval(ctx, value); err != nil {
		return c.fail(errEval, err)
	}
	if c.cache != nil {
		outcome := "uncacheable"
		if keyed && c.cache.put(generation, key, c.decision, c.ndb, time.Now()) {
			outcome = "miss"
		}
		c.plugin.cacheMetrics.lookups.WithLabelValues(outcome).Inc()
	}
	return nil
}

func (c *check) eval(ctx context.Context, input ast.Value) error {
	if c.logger.GetLevel() == logging.Debug {
		c.logger.WithFields(map[string]any{
			"input": input, "query": c.cfg.QueryString(), "txn": c.txn.ID(),
		}).Debug("Executing policy query.")
	}
	pq, err := c.plugin.preparedQuery(c.cfg, c.txn, c.metrics)
	if err != nil {
		return err
	}
	// The cache needs to know which non-deterministic builtins a decision called (cacheableUntil).
	var ndb builtins.NDBCache
	if cfg := c.plugin.manager.Config; cfg != nil && cfg.NDBuiltinCacheEnabled() {
		ndb = builtins.NDBCache{}
		c.logNDB = true
	} else if c.cache != nil {
		ndb = builtins.NDBCache{}
	}
	tracker := &topdown.EvaluatedRuleTracker{}
	rs, err := pq.Eval(ctx,
		rego.EvalParsedInput(input),
		rego.EvalTransaction(c.txn),
		rego.EvalMetrics(c.metrics),
		rego.EvalInterQueryBuiltinCache(c.plugin.iqCache),
		rego.EvalPrintHook(printHook{c.logger}),
		rego.EvalNDBuiltinCache(ndb),
		rego.EvalEvaluatedRuleTracker(tracker),
	)
	switch {
	case err != nil:
		return err
	case len(rs) == 0:
		return errors.New("undefined decision")
	case len(rs) > 1:
		return errors.New("multiple evaluation results")
	}
	c.ndb = ndb
	c.decision = rs[0].Expressions[0].Value
	if len(tracker.Labels) > 0 {
		c.ruleLabels = tracker.Labels
	}
	return nil
}

// preparedQuery prepares the configured query once per compiler (policy) change.
func (p *Plugin) preparedQuery(cfg *Config, txn storage.Transaction, m metrics.Metrics) (*rego.PreparedEvalQuery, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.prepared != nil && p.cfg == cfg {
		return p.prepared, nil
	}
	pq, err := rego.New(
		rego.ParsedQuery(cfg.query),
		rego.Compiler(p.manager.GetCompiler()),
		rego.Store(p.manager.Store),
		rego.Transaction(txn),
		rego.Runtime(p.manager.Info),
		rego.Metrics(m),
		rego.EnablePrintStatements(true),
	).PrepareForEval(context.Background())
	if err != nil {
		return nil, err
	}
	if p.cfg == cfg {
		p.prepared = &pq
	}
	return &pq, nil
}

// finish stops the timer, counts a failure, writes the decision log entry and releases the
// transaction. A decision log that cannot be written turns the answer's status into UNKNOWN
// (Envoy refuses the request), as upstream does.
func (c *check) finish(ctx context.Context) *rpcstatus.Status {
	c.metrics.Timer(metrics.ServerHandler).Stop()
	if c.failed != nil {
		reason := c.failed.code
		var te *topdown.Error
		if errors.As(c.failed.err, &te) {
			reason = te.Code
		}
		c.perf.countError(reason)
	}
	if c.txn == nil {
		return nil
	}
	// The Check may have been cancelled or timed out; the decision is logged regardless.
	ctx = context.WithoutCancel(ctx)
	defer c.plugin.manager.Store.Abort(ctx, c.txn)
	if c.logs != nil {
		// Off the request path: the entry is made here (revisions from this transaction) and
		// masked and written by the queue, which opens a transaction of its own.
		info, err := c.decisionLogEntry(ctx, false)
		if err != nil {
			c.logger.WithFields(map[string]any{"err": err}).Error("Decision log entry could not be made.")
			c.plugin.logMetrics.failed.Inc()
			return nil
		}
		if info != nil {
			c.logs.push(info)
		}
		return nil
	}
	if err := c.logDecision(ctx); err != nil {
		c.logger.WithFields(map[string]any{"err": err}).Debug("Error when logging event")
		c.perf.countError(errUnknownLogFailed)
		return &rpcstatus.Status{Code: int32(code.Code_UNKNOWN), Message: err.Error()}
	}
	return nil
}

type printHook struct{ logger logging.Logger }

func (h printHook) Print(pctx print.Context, msg string) error {
	h.logger.Info("%v: %s", pctx.Location, msg)
	return nil
}
