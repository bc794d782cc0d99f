package holdfastotel

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/breaker"
	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/retry"
)

// ScopeName is the instrumentation scope of the meter and tracer.
const ScopeName = "github.com/holdfast-go/holdfast/otel"

// Config configures an Instrumentation.
type Config struct {
	// MeterProvider provides the meter. If nil, otel.GetMeterProvider().
	MeterProvider metric.MeterProvider
	// TracerProvider provides the tracer. If nil, otel.GetTracerProvider().
	TracerProvider trace.TracerProvider
	// Propagator extracts the parent of Handler's spans from the request
	// headers and injects Transport's into outgoing ones. If nil,
	// otel.GetTextMapPropagator().
	Propagator propagation.TextMapPropagator
	// Route names a request's route in Handler's span name and the
	// http.route attribute. It must have low cardinality (a pattern, not
	// a path); a ServeMux pattern's method is dropped. If nil, the
	// r.Pattern that a ServeMux directly below Handler set. With holdfast's
	// middleware between them (each passes down a copy of the request) set
	// Route, e.g. func(r *http.Request) string { _, p := mux.Handler(r); return p }.
	Route func(r *http.Request) string
}

// Instrumentation records holdfast's decisions as OpenTelemetry metrics and
// spans. Build it with New; it is safe for concurrent use.
type Instrumentation struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	sets   sets
	route  func(*http.Request) string

	serverDur metric.Float64Histogram
	clientDur metric.Float64Histogram

	verifications  metric.Int64Counter
	verifyDur      metric.Float64Histogram
	fallbacks      metric.Int64Counter
	fallbackActive metric.Int64UpDownCounter
	refreshErrors  metric.Int64Counter
	tokenRefresh   metric.Float64Histogram
	revocations    metric.Int64Counter
	reconciled     metric.Int64Counter
	offline        metric.Int64Counter

	retries metric.Int64Counter
	giveUps metric.Int64Counter

	breakerCalls       metric.Int64Counter
	breakerDur         metric.Float64Histogram
	breakerTransitions metric.Int64Counter

	idemOutcomes metric.Int64Counter

	gate        metric.Int64Counter
	modeChanges metric.Int64Counter
	mode        metric.Int64Gauge
	stale       metric.Int64Counter
	staleAge    metric.Float64Histogram
}

// HTTP duration buckets of the semantic conventions, in seconds.
var httpBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// New returns an Instrumentation for cfg. It fails only when the meter
// refuses an instrument.
func New(cfg Config) (*Instrumentation, error) {
	mp := cfg.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	tp := cfg.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	prop := cfg.Propagator
	if prop == nil {
		prop = otel.GetTextMapPropagator()
	}
	route := cfg.Route
	if route == nil {
		route = func(r *http.Request) string { return r.Pattern }
	}
	m := mp.Meter(ScopeName)
	i := &Instrumentation{tracer: tp.Tracer(ScopeName), prop: prop, route: route}

	var errs []error
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	seconds := func(name, desc string, buckets []float64) metric.Float64Histogram {
		opts := []metric.Float64HistogramOption{metric.WithUnit("s"), metric.WithDescription(desc)}
		if buckets != nil {
			opts = append(opts, metric.WithExplicitBucketBoundaries(buckets...))
		}
		h, err := m.Float64Histogram(name, opts...)
		errs = append(errs, err)
		return h
	}
	i.serverDur = seconds("http.server.request.duration", "Duration of HTTP server requests.", httpBuckets)
	i.clientDur = seconds("http.client.request.duration", "Duration of HTTP client requests.", httpBuckets)

	i.verifications = counter("holdfast.auth.verifications", "{verification}", "Token verifications by outcome.")
	i.verifyDur = seconds("holdfast.auth.verification.duration", "Duration of token verifications.",
		[]float64{0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1})
	i.fallbacks = counter("holdfast.auth.fallback.transitions", "{transition}", "Entries into and exits from fallback mode.")
	var err error
	i.fallbackActive, err = m.Int64UpDownCounter("holdfast.auth.fallback.active", metric.WithUnit("{verifier}"),
		metric.WithDescription("Verifiers in fallback mode."))
	errs = append(errs, err)
	i.refreshErrors = counter("holdfast.auth.jwks.refresh_errors", "{error}", "Failed refreshes of a key set or revocation list.")
	i.tokenRefresh = seconds("holdfast.auth.token_refresh.duration", "Duration of TokenSource refreshes.", httpBuckets)
	i.revocations = counter("holdfast.auth.revocations", "{revocation}", "Revocations seen for the first time.")
	i.reconciled = counter("holdfast.auth.reconciled", "{token}", "Tokens accepted degraded and found revoked or invalid once the IdP was back.")
	i.offline = counter("holdfast.auth.offline_issued", "{token}", "Offline tokens minted.")

	i.retries = counter("holdfast.retry.retries", "{retry}", "Retries made by retry.Transport.")
	i.giveUps = counter("holdfast.retry.give_ups", "{give_up}", "Failed attempts retry.Transport did not retry.")

	i.breakerCalls = counter("holdfast.breaker.calls", "{call}", "Calls decided by a circuit breaker.")
	i.breakerDur = seconds("holdfast.breaker.call.duration", "Duration of calls let through by a circuit breaker.", httpBuckets)
	i.breakerTransitions = counter("holdfast.breaker.transitions", "{transition}", "Circuit breaker state changes.")

	i.idemOutcomes = counter("holdfast.idempotency.outcomes", "{request}", "Idempotency decisions on keyed requests.")

	i.gate = counter("holdfast.degrade.gate.decisions", "{request}", "Decisions of the degrade gate.")
	i.modeChanges = counter("holdfast.degrade.mode_changes", "{change}", "Changes of the service's mode.")
	i.mode, err = m.Int64Gauge("holdfast.degrade.mode", metric.WithUnit("{mode}"),
		metric.WithDescription("The service's mode: 0 normal, 1 degraded, 2 read-only."))
	errs = append(errs, err)
	i.stale = counter("holdfast.stale.served", "{response}", "Responses served stale by degrade.Stale.")
	i.staleAge = seconds("holdfast.stale.age", "Age of the responses served stale.", nil)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("holdfastotel: %w", err)
	}
	return i, nil
}

// Instrument sets the hooks of each target to the Instrumentation's,
// chained after any hook already set (which runs first). Targets are
// pointers to:
//
//	*authfallback.Config              OnVerify, OnFallbackEnter/Exit, OnRefreshError, OnReconcile, OnRevocation; HTTPClient's transport (fetch spans)
//	*authfallback.TokenSourceConfig   OnRefresh, OnRefreshError
//	*authfallback.OfflineConfig       OnIssue
//	*authfallback.RevocationListConfig OnRefreshError
//	*retry.Transport                  OnRetry, OnGiveUp
//	*breaker.Config                   OnCall, OnStateChange
//	*idempotency.Config               OnOutcome
//	*idempotency.ReplayerConfig       Handler (a span per replayed request)
//	*degrade.Config                   OnGate, OnModeChange
//	*degrade.Stale                    OnStale
//
// Instrument a Config before passing it to its New (New copies it). It
// returns an error for any other type, after instrumenting the known ones.
func (i *Instrumentation) Instrument(targets ...any) error {
	var errs []error
	for _, t := range targets {
		switch c := t.(type) {
		case *authfallback.Config:
			c.OnVerify = chain(c.OnVerify, i.OnVerify)
			c.OnFallbackEnter = chain(c.OnFallbackEnter, i.OnFallbackEnter)
			c.OnFallbackExit = chain(c.OnFallbackExit, i.OnFallbackExit)
			c.OnRefreshError = chain(c.OnRefreshError, i.OnRefreshError)
			c.OnReconcile = chain(c.OnReconcile, i.OnReconcile)
			c.OnRevocation = chain(c.OnRevocation, i.OnRevocation)
			c.HTTPClient = i.fetchClient(c.HTTPClient)
		case *authfallback.TokenSourceConfig:
			c.OnRefresh = chain(c.OnRefresh, i.OnTokenRefresh)
			c.OnRefreshError = chain(c.OnRefreshError, i.OnTokenRefreshError)
		case *authfallback.OfflineConfig:
			c.OnIssue = chain(c.OnIssue, i.OnOfflineIssue)
		case *authfallback.RevocationListConfig:
			c.OnRefreshError = chain(c.OnRefreshError, i.OnRefreshError)
		case *retry.Transport:
			c.OnRetry = chain(c.OnRetry, i.OnRetry)
			c.OnGiveUp = chain(c.OnGiveUp, i.OnGiveUp)
		case *breaker.Config:
			c.OnCall = chain(c.OnCall, i.OnCall)
			c.OnStateChange = chain(c.OnStateChange, i.OnStateChange)
		case *idempotency.Config:
			c.OnOutcome = chain(c.OnOutcome, i.OnOutcome)
		case *idempotency.ReplayerConfig:
			if c.Handler != nil {
				c.Handler = i.ReplayHandler(c.Handler)
			}
		case *degrade.Config:
			c.OnGate = chain(c.OnGate, i.OnGate)
			c.OnModeChange = chain(c.OnModeChange, i.OnModeChange)
		case *degrade.Stale:
			c.OnStale = chain(c.OnStale, i.OnStale)
		default:
			errs = append(errs, fmt.Errorf("holdfastotel: cannot instrument a %T", t))
		}
	}
	return errors.Join(errs...)
}

func chain[E any](first, then func(E)) func(E) {
	if first == nil {
		return then
	}
	return func(ev E) { first(ev); then(ev) }
}

// fetchClient returns c (or a default client) with its transport wrapped
// in client spans named holdfast.auth.fetch.
func (i *Instrumentation) fetchClient(c *http.Client) *http.Client {
	var cc http.Client
	if c != nil {
		cc = *c
	}
	cc.Transport = &transport{i: i, base: cc.Transport, name: "holdfast.auth.fetch"}
	return &cc
}

// ctxOf returns ctx, or context.Background() for a nil one.
func ctxOf(ctx context.Context) context.Context {
	if ctx == nil {
		return context.Background()
	}
	return ctx
}

// reqCtx returns r's context, or context.Background() for a nil r.
func reqCtx(r *http.Request) context.Context {
	if r == nil {
		return context.Background()
	}
	return r.Context()
}

// span records a finished span of the given duration ending now.
func (i *Instrumentation) span(ctx context.Context, name string, d time.Duration, fail string, attrs ...attribute.KeyValue) {
	end := time.Now()
	_, s := i.tracer.Start(ctx, name, trace.WithTimestamp(end.Add(-d)), trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(attrs...))
	if fail != "" {
		s.SetStatus(codes.Error, fail)
	}
	s.End(trace.WithTimestamp(end))
}
