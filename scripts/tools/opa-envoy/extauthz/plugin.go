package extauthz

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	iqcache "github.com/open-policy-agent/opa/v1/topdown/cache"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
)

// BuildRevision names this build of the plugin (set by scripts/tools/opa.sh with -ldflags -X); it
// is logged when the gRPC server starts.
var BuildRevision = "dev"

// Factory creates the plugin for OPA's runtime (runtime.RegisterPlugin).
type Factory struct{}

// Validate parses plugins.envoy_ext_authz_grpc.
func (Factory) Validate(_ *plugins.Manager, raw []byte) (any, error) {
	return ParseConfig(raw)
}

// New creates the plugin; Start opens the gRPC listener.
func (Factory) New(m *plugins.Manager, cfg any) plugins.Plugin {
	return NewPlugin(m, cfg.(*Config))
}

// Plugin serves envoy.service.auth.v3.Authorization on the configured address.
type Plugin struct {
	authv3.UnimplementedAuthorizationServer

	manager      *plugins.Manager
	iqCache      iqcache.InterQueryCache // http.send & co. caching across checks
	metrics      *perfMetrics            // nil unless enable-performance-metrics
	cacheMetrics *cacheMetrics
	logMetrics   *logMetrics

	mu       sync.Mutex
	cfg      *Config
	server   *grpc.Server
	prepared *rego.PreparedEvalQuery // dropped when the policies change
	cache    *decisionCache          // nil when decision-cache is off
	// watchFailed: no store trigger, so no cache (it could not see data changes).
	watchFailed bool
	logs        *logQueue // nil when decision-log-queue is 0
}

// NewPlugin creates the plugin for a manager; exported for tests.
func NewPlugin(m *plugins.Manager, cfg *Config) *Plugin {
	p := &Plugin{
		manager: m,
		cfg:     cfg,
		iqCache: iqcache.NewInterQueryCacheWithContext(context.Background(), m.InterQueryBuiltinCacheConfig()),
	}
	if cfg.EnablePerformanceMetrics {
		p.metrics = newPerfMetrics(m, cfg.GRPCRequestDurationSecondsBuckets)
	}
	p.cacheMetrics = newCacheMetrics(m)
	p.logMetrics = newLogMetrics(m)
	p.applyExtensions(cfg)
	m.RegisterCompilerTrigger(p.compilerChanged)
	// Every commit to the store (a bundle, the sandbox registry) may change decisions.
	err := storage.Txn(context.Background(), m.Store, storage.WriteParams, func(txn storage.Transaction) error {
		_, err := m.Store.Register(context.Background(), txn, storage.TriggerConfig{
			OnCommit: func(context.Context, storage.Transaction, storage.TriggerEvent) { p.storeChanged() },
		})
		return err
	})
	if err != nil {
		m.Logger().WithFields(map[string]any{"err": err}).Error("Unable to watch the store: decision cache off.")
		p.watchFailed = true
		p.cache = nil
	}
	m.UpdatePluginStatus(PluginName, &plugins.Status{State: plugins.StateNotReady})
	return p
}

// snapshot returns the configuration, the metrics (nil when disabled), the decision cache and the
// decision log queue (nil when off) for one check.
func (p *Plugin) snapshot() (*Config, *perfMetrics, *decisionCache, *logQueue) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.cfg.EnablePerformanceMetrics {
		return p.cfg, nil, p.cache, p.logs
	}
	return p.cfg, p.metrics, p.cache, p.logs
}

// applyExtensions creates the decision cache and the decision log queue the configuration asks
// for (p.mu held, or p not shared yet). A queue being replaced is drained in the background.
func (p *Plugin) applyExtensions(cfg *Config) {
	p.cache = nil
	if !p.watchFailed {
		p.cache = newDecisionCache(cfg.DecisionCache)
	}
	if p.logs != nil && cap(p.logs.entries) != cfg.DecisionLogQueue {
		old := p.logs
		p.logs = nil
		go old.close(context.Background())
	}
	if p.logs == nil && cfg.DecisionLogQueue > 0 {
		p.logs = newLogQueue(p.manager, cfg.DecisionLogQueue, p.logMetrics)
	}
}

func (p *Plugin) compilerChanged(storage.Transaction) {
	p.mu.Lock()
	p.prepared = nil
	p.mu.Unlock()
	p.storeChanged()
}

func (p *Plugin) storeChanged() {
	p.mu.Lock()
	c := p.cache
	p.mu.Unlock()
	c.invalidate()
}

// Start binds the listener and serves in the background. Like upstream, a listener that cannot be
// created is logged and leaves the plugin not ready (OPA keeps running; /health?plugins fails).
func (p *Plugin) Start(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.startLocked()
	return nil
}

func (p *Plugin) startLocked() {
	cfg := p.cfg
	logger := p.manager.Logger()
	p.manager.UpdatePluginStatus(PluginName, &plugins.Status{State: plugins.StateNotReady})

	lis, err := listen(cfg.Addr)
	if err != nil {
		logger.WithFields(map[string]any{"err": err}).Error("Unable to create listener.")
		p.manager.UpdatePluginStatus(PluginName, &plugins.Status{State: plugins.StateErr, Message: err.Error()})
		return
	}

	// Stream workers: a fixed set of goroutines serves the Checks. Without them every Check runs
	// on a fresh goroutine whose small stack is grown (copied) again and again by the deep
	// recursion of Rego evaluation: about a tenth of OPA's CPU per decision in a profile.
	srv := grpc.NewServer(
		grpc.MaxRecvMsgSize(cfg.GRPCMaxRecvMsgSize),
		grpc.MaxSendMsgSize(cfg.GRPCMaxSendMsgSize),
		grpc.NumStreamWorkers(uint32(8*runtime.GOMAXPROCS(0))),
	)
	authv3.RegisterAuthorizationServer(srv, p)
	if cfg.EnableReflection {
		reflection.Register(srv)
	}
	p.server = srv
	p.prepared = nil

	logger.WithFields(map[string]any{
		"addr":              cfg.Addr,
		"query":             cfg.Query,
		"path":              cfg.Path,
		"dry-run":           cfg.DryRun,
		"enable-reflection": cfg.EnableReflection,
		"build":             BuildRevision,
	}).Info("Starting gRPC server.")
	p.manager.UpdatePluginStatus(PluginName, &plugins.Status{State: plugins.StateOK})

	go func() {
		err := srv.Serve(lis)
		if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			logger.WithFields(map[string]any{"err": err}).Error("Listener failed.")
		} else {
			logger.Info("Listener exited.")
		}
		p.mu.Lock()
		current := p.server == srv
		p.mu.Unlock()
		if current {
			p.manager.UpdatePluginStatus(PluginName, &plugins.Status{State: plugins.StateNotReady})
		}
	}()
}

// listen understands upstream's address forms: "host:port", "grpc://host:port",
// "unix:///path.sock" (an existing socket file is removed first) and "unix://@name" (abstract).
func listen(addr string) (net.Listener, error) {
	if !strings.Contains(addr, "://") {
		addr = "grpc://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "grpc":
		return net.Listen("tcp", u.Host)
	case "unix":
		path := u.Host + u.Path
		if strings.HasPrefix(addr, "unix://@") {
			path = "@" + path
		} else {
			_ = os.Remove(path)
		}
		return net.Listen("unix", path)
	default:
		return nil, fmt.Errorf("invalid url scheme %q", u.Scheme)
	}
}

// Stop stops serving, letting running checks finish (bounded by ctx, at most 10 s).
func (p *Plugin) Stop(ctx context.Context) {
	p.mu.Lock()
	srv := p.server
	p.server = nil
	p.mu.Unlock()
	p.manager.UpdatePluginStatus(PluginName, &plugins.Status{State: plugins.StateNotReady})
	stopGracefully(ctx, srv)
	p.mu.Lock()
	q := p.logs
	p.logs = nil
	p.mu.Unlock()
	if q != nil {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		q.close(ctx)
	}
}

// Reconfigure restarts the server with the new configuration. (Upstream ignores reconfiguration;
// a restart is what a changed address or limit needs.)
func (p *Plugin) Reconfigure(ctx context.Context, cfg any) {
	p.mu.Lock()
	old := p.server
	p.server = nil
	p.mu.Unlock()
	stopGracefully(ctx, old)

	p.mu.Lock()
	defer p.mu.Unlock()
	p.cfg = cfg.(*Config)
	if p.cfg.EnablePerformanceMetrics && p.metrics == nil {
		p.metrics = newPerfMetrics(p.manager, p.cfg.GRPCRequestDurationSecondsBuckets)
	}
	p.applyExtensions(p.cfg)
	p.startLocked()
}

func stopGracefully(ctx context.Context, srv *grpc.Server) {
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		srv.Stop()
	}
}
