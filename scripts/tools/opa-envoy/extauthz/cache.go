package extauthz

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/topdown/builtins"
)

// CacheUntilKey is the key of a decision object that bounds, in Unix nanoseconds, how long the
// decision may be reused: a policy that reads the clock (time.now_ns) states it, e.g. a token's
// expiry. A decision that read the clock without stating it (absent or null) is never cached.
const CacheUntilKey = "cache_until_ns"

// clockBuiltin is the only non-deterministic builtin a cached decision may have called (and only
// with CacheUntilKey set): any other (http.send, rand.intn, uuid.rfc4122, ...) makes the decision
// uncacheable.
const clockBuiltin = "time.now_ns"

// decisionCache reuses decisions for identical inputs (agentd's extension; upstream has none).
//
// Correct by construction, not by review: with the cache on, the policy is evaluated on the
// projection of the input onto the configured paths, so a decision can only depend on what the
// key holds; every commit to OPA's store (a bundle, the sandbox registry) starts a new
// generation, and entries of an older one are never returned; the clock is handled by
// CacheUntilKey. The entries are bounded: at max-entries the map is emptied and refilled.
type decisionCache struct {
	maxEntries int
	maxAge     time.Duration
	paths      [][]string

	generation atomic.Uint64

	mu      sync.Mutex
	gen     uint64 // generation the entries belong to
	entries map[[sha256.Size]byte]cacheEntry
}

type cacheEntry struct {
	decision  any // shared and never modified: readers get deepCopy for anything that may write
	expiresAt int64
}

func newDecisionCache(cfg *DecisionCacheConfig) *decisionCache {
	if cfg == nil || cfg.MaxEntries <= 0 {
		return nil
	}
	return &decisionCache{
		maxEntries: cfg.MaxEntries,
		maxAge:     time.Duration(cfg.MaxAgeSeconds * float64(time.Second)),
		paths:      cfg.Input,
		entries:    map[[sha256.Size]byte]cacheEntry{},
	}
}

// invalidate starts a new generation (called on every store commit and policy change).
func (c *decisionCache) invalidate() {
	if c != nil {
		c.generation.Add(1)
	}
}

// project copies the values at the configured paths of input into a new document: what the
// policy is evaluated on and what the cache key is made of.
func (c *decisionCache) project(input map[string]any) map[string]any {
	out := map[string]any{}
	for _, path := range c.paths {
		var cur any = input
		found := true
		for _, seg := range path {
			m, ok := cur.(map[string]any)
			if !ok {
				found = false
				break
			}
			if cur, ok = m[seg]; !ok {
				found = false
				break
			}
		}
		if !found {
			continue
		}
		dst := out
		for _, seg := range path[:len(path)-1] {
			next, ok := dst[seg].(map[string]any)
			if !ok {
				next = map[string]any{}
				dst[seg] = next
			}
			dst = next
		}
		dst[path[len(path)-1]] = cur
	}
	return out
}

// key hashes the projected input: encoding/json writes map keys sorted, so equal documents give
// equal keys.
func (c *decisionCache) key(projected map[string]any) ([sha256.Size]byte, error) {
	js, err := json.Marshal(projected)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return sha256.Sum256(js), nil
}

func (c *decisionCache) get(gen uint64, key [sha256.Size]byte, now time.Time) (any, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return nil, false
	}
	e, ok := c.entries[key]
	if !ok || now.UnixNano() >= e.expiresAt {
		return nil, false
	}
	return e.decision, true
}

// put stores a decision evaluated in generation gen, unless it is not cacheable (see
// cacheableUntil); it reports whether it did.
func (c *decisionCache) put(gen uint64, key [sha256.Size]byte, decision any, ndb builtins.NDBCache, now time.Time) bool {
	until, ok := cacheableUntil(decision, ndb)
	if !ok {
		return false
	}
	expires := now.Add(c.maxAge).UnixNano()
	if until < expires {
		expires = until
	}
	if expires <= now.UnixNano() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen < c.gen {
		return false // evaluated on data older than the entries: already stale
	}
	if gen > c.gen || len(c.entries) >= c.maxEntries {
		c.entries = make(map[[sha256.Size]byte]cacheEntry, min(c.maxEntries, 1024))
		c.gen = gen
	}
	c.entries[key] = cacheEntry{decision: decision, expiresAt: expires}
	return true
}

// cacheableUntil says until when (Unix ns) a decision may be reused: no limit for a decision that
// called no non-deterministic builtin, CacheUntilKey for one that only read the clock, never
// otherwise.
func cacheableUntil(decision any, ndb builtins.NDBCache) (int64, bool) {
	clock := false
	for name := range ndb {
		if name != clockBuiltin {
			return 0, false
		}
		clock = true
	}
	obj, isObject := decision.(map[string]any)
	raw, stated := obj[CacheUntilKey]
	if !isObject || !stated || raw == nil { // null: not stated (a policy's "no end")
		if clock {
			return 0, false
		}
		return math.MaxInt64, true
	}
	until, err := nanos(raw)
	if err != nil {
		return 0, false
	}
	return until, true
}

func nanos(v any) (int64, error) {
	switch n := v.(type) {
	case json.Number:
		if i, err := n.Int64(); err == nil {
			return i, nil
		}
		f, err := n.Float64()
		if err != nil {
			return 0, err
		}
		return int64(f), nil
	case float64:
		return int64(n), nil
	case int64:
		return n, nil
	case int:
		return int64(n), nil
	case string:
		return strconv.ParseInt(n, 10, 64)
	default:
		return 0, fmt.Errorf("%s is %T, not a number", CacheUntilKey, v)
	}
}

// deepCopy copies the maps and slices of a JSON-like value (what a decision-log mask may modify).
func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = deepCopy(e)
		}
		return out
	default:
		return v
	}
}
