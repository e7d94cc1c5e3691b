package extauthz

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/plugins"
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
	info, err := c.decisionLogEntry(ctx, true)
	if err != nil || info == nil {
		return err
	}
	return logs.Lookup(c.plugin.manager).Log(ctx, info)
}

// decisionLogEntry makes the entry logDecision hands over, or nil when decision logging is not
// configured. withTxn: the mask is evaluated in this check's transaction (written before the
// answer); without it, in one of the log queue's own.
func (c *check) decisionLogEntry(ctx context.Context, withTxn bool) (*server.Info, error) {
	if logs.Lookup(c.plugin.manager) == nil {
		return nil, nil
	}

	var input any = c.input // a nil map (unparseable request) is logged as "input": null
	info := &server.Info{
		Timestamp:           time.Now(),
		DecisionID:          c.id,
		Query:               c.cfg.Query,
		Path:                c.cfg.Path,
		Input:               &input,
		Metrics:             c.metrics,
		EvaluatedRuleLabels: c.ruleLabels,
	}
	if withTxn {
		info.Txn = c.txn
	}
	if c.ndb != nil && c.logNDB {
		v, err := ast.JSON(c.ndb.AsValue())
		if err != nil {
			return nil, err
		}
		info.NDBuiltinCache = &v
	}
	if err := c.addRevisions(ctx, info); err != nil {
		return nil, err
	}
	if c.err != nil {
		info.Error = loggableError(c.err)
	} else {
		result := c.decision
		if c.cached {
			result = deepCopy(result) // shared with the cache; a mask may write to it
		}
		info.Results = &result
	}
	return info, nil
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

// logQueue writes decision log entries off the request path (agentd's extension, plugin key
// decision-log-queue): a Check hands its entry over and answers at once; one goroutine masks,
// formats and writes the entries in order. The queue is bounded: when it is full the entry is
// dropped, counted (decision_logs_dropped_total) and a warning is logged at most once a second, so
// no decision disappears silently. Stop drains it.
type logQueue struct {
	manager *plugins.Manager
	entries chan *server.Info
	done    chan struct{}
	metrics *logMetrics

	lastWarning atomic.Int64 // Unix ns of the last "queue full" warning
	pending     atomic.Int64 // dropped since that warning
}

func newLogQueue(m *plugins.Manager, size int, metrics *logMetrics) *logQueue {
	q := &logQueue{manager: m, entries: make(chan *server.Info, size), done: make(chan struct{}), metrics: metrics}
	go q.run()
	return q
}

func (q *logQueue) run() {
	defer close(q.done)
	ctx := context.Background()
	for info := range q.entries {
		lp := logs.Lookup(q.manager)
		if lp == nil {
			continue
		}
		if err := lp.Log(ctx, info); err != nil {
			q.manager.Logger().WithFields(map[string]any{"err": err, "decision-id": info.DecisionID}).Error("Decision log entry could not be written.")
			q.metrics.failed.Inc()
		}
	}
}

// push enqueues an entry, or drops and counts it when the queue is full.
func (q *logQueue) push(info *server.Info) {
	select {
	case q.entries <- info:
	default:
		q.metrics.dropped.Inc()
		n := q.pending.Add(1)
		now := time.Now().UnixNano()
		last := q.lastWarning.Load()
		if now-last >= int64(time.Second) && q.lastWarning.CompareAndSwap(last, now) {
			q.pending.Add(-n)
			q.manager.Logger().WithFields(map[string]any{"dropped": n, "queue": cap(q.entries)}).Warn("Decision log queue full: entries dropped (decision_logs_dropped_total).")
		}
	}
}

// close stops accepting entries and waits (bounded by ctx) until the queued ones are written.
func (q *logQueue) close(ctx context.Context) {
	close(q.entries)
	select {
	case <-q.done:
	case <-ctx.Done():
	}
}
