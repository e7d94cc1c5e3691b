package extauthz

import (
	"context"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/open-policy-agent/opa/v1/server"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// logDecision hands the check to OPA's decision_logs plugin, like OPA's REST API does for
// /v1/data: decision id, path (or query), input, result or error, bundle revisions, metrics,
// rule labels and the ND-builtin cache. The plugin applies mask_decision/drop_decision (evaluated
// in this check's transaction), prints to the console and/or uploads. Nothing happens when
// decision logging is not configured.
func (c *check) logDecision(ctx context.Context) error {
	lp := logs.Lookup(c.plugin.manager)
	if lp == nil {
		return nil
	}

	var input any = c.input // a nil map (unparseable request) is logged as "input": null
	info := &server.Info{
		Timestamp:           time.Now(),
		DecisionID:          c.id,
		Query:               c.cfg.Query,
		Path:                c.cfg.Path,
		Input:               &input,
		Metrics:             c.metrics,
		Txn:                 c.txn,
		EvaluatedRuleLabels: c.ruleLabels,
	}
	if c.ndb != nil {
		v, err := ast.JSON(c.ndb.AsValue())
		if err != nil {
			return err
		}
		info.NDBuiltinCache = &v
	}
	if err := c.addRevisions(ctx, info); err != nil {
		return err
	}
	if c.err != nil {
		info.Error = loggableError(c.err)
	} else {
		result := c.decision
		info.Results = &result
	}
	return lp.Log(ctx, info)
}

// addRevisions records the revision of every activated bundle, and the legacy single-bundle
// revision when there is one.
func (c *check) addRevisions(ctx context.Context, info *server.Info) error {
	store := c.plugin.manager.Store
	names, err := bundle.ReadBundleNamesFromStore(ctx, store, c.txn)
	if err != nil && !storage.IsNotFound(err) {
		return err
	}
	info.Bundles = make(map[string]server.BundleInfo, len(names))
	for _, name := range names {
		rev, err := bundle.ReadBundleRevisionFromStore(ctx, store, c.txn, name)
		if err != nil && !storage.IsNotFound(err) {
			return err
		}
		info.Bundles[name] = server.BundleInfo{Revision: rev}
	}
	//nolint:staticcheck // the deprecated field is still logged (upstream does too)
	legacy, err := bundle.LegacyReadRevisionFromStore(ctx, store, c.txn)
	if err != nil && !storage.IsNotFound(err) {
		return err
	}
	info.Revision = legacy
	return nil
}

// logError is how an error that has no JSON form of its own appears in a decision log entry:
// {"message": "..."}.
type logError struct {
	Message string `json:"message"`
}

func (e *logError) Error() string { return e.Message }

// loggableError keeps OPA's own error types (they serialize with code, message and location) and
// wraps everything else; a cancelled evaluation is reported as the deadline it was.
func loggableError(err error) error {
	switch e := err.(type) {
	case *storage.Error, *ast.Error, ast.Errors:
		return err
	case *topdown.Error:
		if topdown.IsCancel(e) {
			return &topdown.Error{Code: topdown.CancelErr, Message: "context deadline reached during query execution"}
		}
		return err
	default:
		return &logError{Message: err.Error()}
	}
}
