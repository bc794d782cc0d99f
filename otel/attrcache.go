package holdfastotel

import (
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// maxCachedSets bounds each cache of attribute sets: past it, sets are
// built per measurement (a Config.Route of unbounded cardinality costs
// allocations, not memory).
const maxCachedSets = 1024

// setCache keeps the measurement option of each attribute combination, so
// a hot path records without building and sorting an attribute set.
type setCache[K comparable] struct {
	mu sync.RWMutex
	m  map[K]metric.MeasurementOption
}

func (c *setCache[K]) get(k K, attrs func() []attribute.KeyValue) metric.MeasurementOption {
	c.mu.RLock()
	o, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return o
	}
	o = metric.WithAttributeSet(attribute.NewSet(attrs()...))
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[K]metric.MeasurementOption)
	}
	if len(c.m) < maxCachedSets {
		c.m[k] = o
	}
	c.mu.Unlock()
	return o
}

type verifyKey struct {
	outcome, reason string
	cached          bool
}

type breakerKey struct {
	side, outcome, state string
	latency              bool // the duration's set: side and outcome only
}

type idemKey struct{ outcome, method string }

type gateKey struct {
	decision, tier, mode string
	stale                bool
}

type httpKey struct {
	method, where, errType string
	status                 int
	degraded               bool
}

// sets holds the caches of an Instrumentation.
type sets struct {
	verify  setCache[verifyKey]
	breaker setCache[breakerKey]
	idem    setCache[idemKey]
	gate    setCache[gateKey]
	server  setCache[httpKey]
	client  setCache[httpKey]
}
