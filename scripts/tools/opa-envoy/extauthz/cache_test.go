package extauthz

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/server"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/code"
)

// A policy with every kind of dependency the cache must respect: store data (the allowed key),
// an input field outside the cached paths (x-other), the clock (deadline) and another
// non-deterministic builtin (policy "random").
const cachePolicy = `package cachetest

key := input.attributes.request.http.headers["x-api-key"]

deadline := data.cachetest.deadline_ns

result := {"allowed": true, "dynamic_metadata": {"saw_other": other}} if {
	input.attributes.contextExtensions.policy == "data"
	key == data.cachetest.allowed_key
}

result := {"allowed": false, "http_status": 403, "dynamic_metadata": {"saw_other": other}} if {
	input.attributes.contextExtensions.policy == "data"
	key != data.cachetest.allowed_key
}

result := {"allowed": time.now_ns() < deadline} if input.attributes.contextExtensions.policy == "clock"

result := {"allowed": time.now_ns() < deadline, "cache_until_ns": deadline} if input.attributes.contextExtensions.policy == "clock-stated"

result := {"allowed": rand.intn("cachetest", 2) >= 0} if input.attributes.contextExtensions.policy == "random"

result := {"allowed": time.now_ns() < deadline, "cache_until_ns": null} if input.attributes.contextExtensions.policy == "clock-null"

other := object.get(input.attributes.request.http.headers, "x-other", "absent")
`

const cacheConfig = `{"path": "cachetest/result", "decision-cache": {"max-entries": 100, "max-age-seconds": 60, "input": [
	["attributes", "contextExtensions"], ["attributes", "request", "http", "headers", "x-api-key"]]}}`

func newCacheEnv(t *testing.T, pluginConfig string, deadline time.Time) *testEnv {
	t.Helper()
	env := newTestEnv(t, pluginConfig, "")
	writeCacheData(t, env, "secret-key-1", deadline)
	ctx := context.Background()
	err := storage.Txn(ctx, env.manager.Store, storage.WriteParams, func(txn storage.Transaction) error {
		return env.manager.Store.UpsertPolicy(ctx, txn, "cachetest.rego", []byte(cachePolicy))
	})
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func writeCacheData(t *testing.T, env *testEnv, allowed string, deadline time.Time) {
	t.Helper()
	ctx := context.Background()
	err := storage.Txn(ctx, env.manager.Store, storage.WriteParams, func(txn storage.Transaction) error {
		return env.manager.Store.Write(ctx, txn, storage.AddOp, storage.MustParsePath("/cachetest"),
			map[string]any{"allowed_key": allowed, "deadline_ns": deadline.UnixNano()})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (e *testEnv) allowed(t *testing.T, policy string, headers map[string]string) bool {
	t.Helper()
	resp, err := e.plugin.Check(context.Background(), authzRequest(policy, headers))
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetStatus().GetCode() == int32(code.Code_OK)
}

func (e *testEnv) lookups(outcome string) float64 {
	return testutil.ToFloat64(e.plugin.cacheMetrics.lookups.WithLabelValues(outcome))
}

func TestDecisionCacheReusesDecisionsAndLogsEachCheck(t *testing.T) {
	env := newCacheEnv(t, cacheConfig, time.Now().Add(time.Hour))
	for i := 0; i < 3; i++ {
		if !env.allowed(t, "data", nil) {
			t.Fatalf("check %d refused", i)
		}
	}
	if env.lookups("miss") != 1 || env.lookups("hit") != 2 {
		t.Fatalf("miss %v hit %v, want 1 and 2", env.lookups("miss"), env.lookups("hit"))
	}
	logs := env.decisionLogs(t)
	if len(logs) != 3 {
		t.Fatalf("%d decision log entries, want one per check", len(logs))
	}
	ids := map[any]bool{}
	for i, entry := range logs {
		ids[entry["decision_id"]] = true
		hit := entry["metrics"].(map[string]any)["counter_decision_cache_hit"]
		if (i == 0) != (hit == nil) {
			t.Errorf("entry %d: counter_decision_cache_hit %v", i, hit)
		}
		if entry["result"].(map[string]any)["allowed"] != true {
			t.Errorf("entry %d: result %v", i, entry["result"])
		}
	}
	if len(ids) != 3 {
		t.Errorf("decision ids repeat: %v", ids)
	}
	// Another key is another entry.
	if env.allowed(t, "data", map[string]string{"x-api-key": "other"}) || env.lookups("miss") != 2 {
		t.Errorf("another key: miss %v", env.lookups("miss"))
	}
}

func TestDecisionCacheEvaluatesOnTheCachedPathsOnly(t *testing.T) {
	// x-other is not a cached path: the policy never sees it, so it cannot make two checks with
	// the same key differ.
	env := newCacheEnv(t, cacheConfig, time.Now().Add(time.Hour))
	resp, err := env.plugin.Check(context.Background(), authzRequest("data", map[string]string{"x-other": "1"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetDynamicMetadata().AsMap()["saw_other"]; got != "absent" {
		t.Errorf("the policy saw x-other = %v", got)
	}
	// The decision log still records the whole input.
	_, js := env.lastDecisionLog(t)
	if !strings.Contains(js, `"x-other":"1"`) {
		t.Errorf("decision log input lost x-other: %s", js)
	}
	// Without the cache the policy sees it (the test above would pass for a policy ignoring it).
	plain := newCacheEnv(t, `{"path": "cachetest/result"}`, time.Now().Add(time.Hour))
	resp, err = plain.plugin.Check(context.Background(), authzRequest("data", map[string]string{"x-other": "1"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetDynamicMetadata().AsMap()["saw_other"]; got != "1" {
		t.Errorf("without the cache the policy saw x-other = %v", got)
	}
}

func TestDecisionCacheForgetsEverythingOnAStoreCommit(t *testing.T) {
	env := newCacheEnv(t, cacheConfig, time.Now().Add(time.Hour))
	if !env.allowed(t, "data", nil) || !env.allowed(t, "data", nil) {
		t.Fatal("refused before the change")
	}
	writeCacheData(t, env, "rotated-key", time.Now().Add(time.Hour))
	if env.allowed(t, "data", nil) {
		t.Fatal("the old key is still allowed after the data changed: a stale cached decision")
	}
	if !env.allowed(t, "data", map[string]string{"x-api-key": "rotated-key"}) {
		t.Fatal("the new key is refused")
	}
	// A policy change also starts a new generation.
	ctx := context.Background()
	err := storage.Txn(ctx, env.manager.Store, storage.WriteParams, func(txn storage.Transaction) error {
		return env.manager.Store.UpsertPolicy(ctx, txn, "cachetest.rego", []byte(strings.Replace(cachePolicy, `"allowed": true, "dynamic_metadata"`, `"allowed": false, "dynamic_metadata"`, 1)))
	})
	if err != nil {
		t.Fatal(err)
	}
	if env.allowed(t, "data", map[string]string{"x-api-key": "rotated-key"}) {
		t.Fatal("allowed after the policy changed to refuse: a stale cached decision")
	}
}

func TestDecisionCacheAndTheClock(t *testing.T) {
	deadline := time.Now().Add(300 * time.Millisecond)
	env := newCacheEnv(t, cacheConfig, deadline)

	// Read the clock without saying until when the answer holds: never cached.
	if !env.allowed(t, "clock", nil) || !env.allowed(t, "clock", nil) {
		t.Fatal("clock: refused before the deadline")
	}
	if env.lookups("uncacheable") != 2 || env.lookups("hit") != 0 {
		t.Fatalf("clock: uncacheable %v hit %v", env.lookups("uncacheable"), env.lookups("hit"))
	}
	// null is not a statement.
	env.allowed(t, "clock-null", nil)
	env.allowed(t, "clock-null", nil)
	if env.lookups("uncacheable") != 4 || env.lookups("hit") != 0 {
		t.Fatalf("clock-null: uncacheable %v hit %v", env.lookups("uncacheable"), env.lookups("hit"))
	}
	// Stated: cached until then, and refused after.
	if !env.allowed(t, "clock-stated", nil) || !env.allowed(t, "clock-stated", nil) || env.lookups("hit") != 1 {
		t.Fatalf("clock-stated: hit %v", env.lookups("hit"))
	}
	time.Sleep(time.Until(deadline) + 20*time.Millisecond)
	if env.allowed(t, "clock-stated", nil) {
		t.Fatal("allowed after cache_until_ns: the cache outlived the deadline")
	}
	// (A decision whose cache_until_ns has passed is not stored either: the third uncacheable.)
	// Any other non-deterministic builtin: never cached.
	env.allowed(t, "random", nil)
	env.allowed(t, "random", nil)
	if env.lookups("uncacheable") != 7 || env.lookups("hit") != 1 {
		t.Errorf("random: uncacheable %v hit %v, want 7 and 1", env.lookups("uncacheable"), env.lookups("hit"))
	}
}

func TestDecisionCacheIsBounded(t *testing.T) {
	env := newCacheEnv(t, strings.Replace(cacheConfig, `"max-entries": 100`, `"max-entries": 3`, 1), time.Now().Add(time.Hour))
	for i := 0; i < 10; i++ {
		env.allowed(t, "data", map[string]string{"x-api-key": fmt.Sprint("k", i)})
	}
	env.plugin.cache.mu.Lock()
	n := len(env.plugin.cache.entries)
	env.plugin.cache.mu.Unlock()
	if n > 3 {
		t.Fatalf("%d entries, limit 3", n)
	}
}

func TestDecisionCacheConfigErrors(t *testing.T) {
	for raw, want := range map[string]string{
		`{"decision-cache": {"max-entries": 10, "max-age-seconds": 1}}`:                       "must list the input paths",
		`{"decision-cache": {"max-entries": 10, "max-age-seconds": 1, "input": [[]]}}`:        "input[0] is empty",
		`{"decision-cache": {"max-entries": 10, "max-age-seconds": 1, "input": [["a", ""]]}}`: "input[0] has an empty key",
		`{"decision-cache": {"max-entries": 10, "input": [["a"]]}}`:                           "max-age-seconds must be positive",
		`{"decision-cache": {"max-entries": -1}}`:                                             "max-entries must be 0",
		`{"decision-log-queue": -5}`:                                                          "decision-log-queue must be 0",
	} {
		_, err := ParseConfig([]byte(raw))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", raw, err, want)
		}
	}
}

func TestDecisionLogQueueWritesAfterTheAnswer(t *testing.T) {
	env := newTestEnv(t, `{"path": "agentd/envoy/authz/result", "decision-log-queue": 100}`, "")
	for i := 0; i < 20; i++ {
		if _, err := env.plugin.Check(context.Background(), authzRequest("allow", nil)); err != nil {
			t.Fatal(err)
		}
	}
	env.plugin.Stop(context.Background()) // drains the queue
	logs := env.decisionLogs(t)
	if len(logs) != 20 {
		t.Fatalf("%d decision log entries after Stop, want 20", len(logs))
	}
	for _, entry := range logs {
		_, js := env.lastDecisionLog(t)
		if strings.Contains(js, "secret-key-1") {
			t.Fatalf("the API key reached the decision log (mask not applied off the request path): %s", js)
		}
		if entry["bundles"].(map[string]any)["agentd"].(map[string]any)["revision"] != "rev-42" {
			t.Errorf("bundle revision missing: %v", entry["bundles"])
		}
	}
}

func TestDecisionLogQueueCountsWhatItDrops(t *testing.T) {
	env := newTestEnv(t, `{"path": "agentd/envoy/authz/result"}`, "")
	// A queue whose writer has not started: the second entry finds it full.
	q := &logQueue{manager: env.manager, entries: make(chan *server.Info, 1), done: make(chan struct{}), metrics: env.plugin.logMetrics}
	q.push(&server.Info{DecisionID: "a"})
	q.push(&server.Info{DecisionID: "b"})
	q.push(&server.Info{DecisionID: "c"})
	if got := testutil.ToFloat64(env.plugin.logMetrics.dropped); got != 2 {
		t.Fatalf("decision_logs_dropped_total %v, want 2", got)
	}
	warned := 0
	for _, e := range env.logger.Entries() {
		if strings.Contains(e.Message, "Decision log queue full") {
			warned++
		}
	}
	if warned != 1 {
		t.Errorf("%d warnings, want one per second", warned)
	}
}
