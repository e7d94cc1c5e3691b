package extauthz

import (
	"errors"

	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/prometheus/client_golang/prometheus"
)

// perfMetrics are upstream's enable-performance-metrics collectors, registered on OPA's /metrics:
// grpc_request_duration_seconds{handler="check"} (answered checks) and error_counter{reason}
// (failed checks, by internal error code or Rego error code).
type perfMetrics struct {
	duration *prometheus.HistogramVec
	errors   *prometheus.CounterVec
}

func newPerfMetrics(m *plugins.Manager, buckets []float64) *perfMetrics {
	pm := &perfMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "grpc_request_duration_seconds",
			Help:    "A histogram of duration for grpc authz requests.",
			Buckets: buckets,
		}, []string{"handler"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "error_counter",
			Help: "A counter for errors",
		}, []string{"reason"}),
	}
	if reg := m.PrometheusRegister(); reg != nil {
		pm.duration = register(reg, pm.duration)
		pm.errors = register(reg, pm.errors)
	}
	return pm
}

// register registers c, or returns the collector already registered under its name (a plugin
// created again by a reconfiguration keeps counting on the same series).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var dup prometheus.AlreadyRegisteredError
		if errors.As(err, &dup) {
			if existing, ok := dup.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}

func (pm *perfMetrics) observeCheck(seconds float64) {
	if pm != nil {
		pm.duration.WithLabelValues("check").Observe(seconds)
	}
}

func (pm *perfMetrics) countError(reason string) {
	if pm != nil && reason != "" {
		pm.errors.WithLabelValues(reason).Inc()
	}
}

// cacheMetrics and logMetrics belong to agentd's extensions (decision-cache, decision-log-queue)
// and are registered whether or not enable-performance-metrics is set.
type cacheMetrics struct {
	lookups *prometheus.CounterVec // outcome: hit, miss, uncacheable (evaluated, not stored)
}

type logMetrics struct {
	dropped prometheus.Counter
	failed  prometheus.Counter
}

func newCacheMetrics(m *plugins.Manager) *cacheMetrics {
	cm := &cacheMetrics{lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "decision_cache_lookups_total",
		Help: "Checks answered from the decision cache (hit), evaluated and stored (miss) or evaluated and not cacheable (uncacheable).",
	}, []string{"outcome"})}
	if reg := m.PrometheusRegister(); reg != nil {
		cm.lookups = register(reg, cm.lookups)
	}
	return cm
}

func newLogMetrics(m *plugins.Manager) *logMetrics {
	lm := &logMetrics{
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "decision_logs_dropped_total",
			Help: "Decision log entries dropped because the decision log queue was full.",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "decision_logs_failed_total",
			Help: "Queued decision log entries that could not be written.",
		}),
	}
	if reg := m.PrometheusRegister(); reg != nil {
		lm.dropped = register(reg, lm.dropped)
		lm.failed = register(reg, lm.failed)
	}
	return lm
}
