package holdfastotel_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"golang.org/x/oauth2"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
	"github.com/holdfast-go/holdfast/breaker"
	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/idempotency"
	holdfastotel "github.com/holdfast-go/holdfast/otel"
	"github.com/holdfast-go/holdfast/retry"
)

// service is a holdfast-wired service instrumented with the module, the
// way the README shows it.
type service struct {
	handler  http.Handler
	verifier *authfallback.Verifier
	ctrl     *degrade.Controller
	replayer *idempotency.Replayer
	client   *breaker.Breaker
}

func newService(t *testing.T, cfg holdfastotel.Config, idp *authtest.Server, downstream string) *service {
	t.Helper()
	s := &service{}
	app := http.NewServeMux()
	// The route of a request, for the span name and http.route: the
	// pattern the mux will pick.
	cfg.Route = func(r *http.Request) string { _, p := app.Handler(r); return p }
	inst, err := holdfastotel.New(cfg)
	require.NoError(t, err)
	dcfg := degrade.Config{Dependencies: map[string]degrade.Mode{"idp": degrade.Normal}, AuditLog: quiet}
	acfg := authfallback.Config{
		Issuer: idp.Issuer(), Audience: []string{idp.Audience()}, JWKSURLs: []string{idp.JWKSURL()},
		Policy:          authfallback.Policy{AllowedScopes: []string{"read", "write"}},
		AuditLog:        quiet,
		OnFallbackEnter: func(ev authfallback.FallbackEvent) { s.ctrl.SetDown("idp", true, ev.Reason) },
		OnFallbackExit:  func(authfallback.FallbackEvent) { s.ctrl.SetDown("idp", false, "") },
	}
	icfg := idempotency.Config{Store: idempotency.NewMemoryStore(idempotency.MemoryConfig{})}
	bcfg := breaker.Config{FailureThreshold: 3, Delay: time.Minute}
	rt := &retry.Transport{BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond}
	stale := &degrade.Stale{}
	require.NoError(t, inst.Instrument(&dcfg, &acfg, &icfg, &bcfg, rt, stale))

	s.ctrl = degrade.New(dcfg)
	t.Cleanup(s.ctrl.Close)
	v, err := authfallback.New(acfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = v.Close() })
	s.verifier = v
	idem := idempotency.New(icfg)
	s.ctrl.SetQueue(v.Handler(http.HandlerFunc(idem.Enqueue)))

	s.client = breaker.New(bcfg)
	rt.Base = s.client.Transport(nil)
	client := &http.Client{Transport: inst.Transport(stale.Transport(rt))}

	app.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, downstream+"/items/"+r.PathValue("id"), nil)
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, "downstream failed", http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		if h := resp.Header.Get(degrade.HeaderDegraded); h != "" {
			w.Header().Set(degrade.HeaderDegraded, h)
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	})
	app.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"ok":true}`)
	})
	inner := idem.Handler(app)
	rcfg := idempotency.ReplayerConfig{Idempotency: idem, Handler: inner, Interval: time.Hour,
		Healthy: func() bool { return s.ctrl.Mode() == degrade.Normal }}
	require.NoError(t, inst.Instrument(&rcfg))
	s.replayer = idempotency.NewReplayer(rcfg)
	t.Cleanup(s.replayer.Close)
	s.handler = inst.Handler(s.ctrl.Handler(v.Handler(inner)))
	return s
}

var quiet = slog.New(slog.DiscardHandler)

func traceContext() propagation.TextMapPropagator { return propagation.TraceContext{} }

func TestServiceShowsSpansAndMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	idp := authtest.New()
	defer idp.Close()
	var failing atomic.Bool
	ds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Cache-Control", "max-age=0, stale-if-error=600")
		_, _ = io.WriteString(w, `{"item":1}`)
	}))
	defer ds.Close()
	svc := newService(t, holdfastotel.Config{MeterProvider: mp, TracerProvider: tp}, idp, ds.URL)
	tok := idp.Issue(jwt.MapClaims{"sub": "otel-test", "scope": "read write"})
	call := func(method, path, key string) *httptest.ResponseRecorder {
		var body io.Reader
		if method == http.MethodPost {
			body = strings.NewReader(`{"n":1}`)
		}
		r := httptest.NewRequest(method, path, body)
		r.Header.Set("Authorization", "Bearer "+tok)
		if key != "" {
			r.Header.Set(idempotency.HeaderKey, key)
		}
		w := httptest.NewRecorder()
		svc.handler.ServeHTTP(w, r)
		return w
	}

	// A verification and a stored read.
	require.Equal(t, http.StatusOK, call(http.MethodGet, "/items/1", "").Code)
	// A keyed write and its replay.
	require.Equal(t, http.StatusCreated, call(http.MethodPost, "/orders", `"a"`).Code)
	require.Equal(t, http.StatusCreated, call(http.MethodPost, "/orders", `"a"`).Code)
	// The downstream fails: retries, then a stale answer; the breaker opens
	// and the next read is refused by it, answered stale again.
	failing.Store(true)
	w := call(http.MethodGet, "/items/1", "")
	require.Equal(t, http.StatusOK, w.Code)
	require.NotEmpty(t, w.Header().Get(degrade.HeaderDegraded))
	require.Equal(t, breaker.Open, svc.client.State(strings.TrimPrefix(ds.URL, "http://")))
	require.Equal(t, http.StatusOK, call(http.MethodGet, "/items/1", "").Code)
	// The IdP goes down: fallback mode, a degraded verification.
	idp.SetDown(true)
	_ = svc.verifier.Refresh(context.Background())
	require.True(t, svc.verifier.Status().Fallback)
	call(http.MethodGet, "/items/2", "")
	// A write queued while degraded, replayed once the mode is normal.
	svc.ctrl.Force(degrade.Degraded, "test")
	require.Equal(t, http.StatusAccepted, call(http.MethodPost, "/orders", `"q"`).Code)
	svc.ctrl.Release()
	idp.SetDown(false)
	_ = svc.verifier.Refresh(context.Background())
	require.Equal(t, degrade.Normal, svc.ctrl.Mode())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := svc.replayer.Drain(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n)

	// Metrics.
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	count := func(name string, attrs ...attribute.KeyValue) int64 { return sum(t, rm, name, attrs...) }
	assert.Positive(t, count("holdfast.auth.verifications", holdfastotel.KeyOutcome.String("ok")), "verification")
	assert.Positive(t, count("holdfast.auth.verifications", holdfastotel.KeyOutcome.String("degraded")), "degraded verification")
	assert.Equal(t, int64(1), count("holdfast.auth.fallback.transitions", holdfastotel.KeyDirection.String("enter")), "fallback")
	assert.Equal(t, int64(1), count("holdfast.auth.fallback.transitions", holdfastotel.KeyDirection.String("exit")))
	assert.Positive(t, count("holdfast.retry.retries", attribute.Int("http.response.status_code", 503)), "retry")
	assert.Positive(t, count("holdfast.breaker.calls", holdfastotel.KeyOutcome.String("rejected")), "open breaker")
	assert.Equal(t, int64(1), count("holdfast.breaker.transitions", holdfastotel.KeyTo.String("open")))
	assert.Equal(t, int64(1), count("holdfast.idempotency.outcomes", holdfastotel.KeyOutcome.String("replay")), "replay")
	assert.Equal(t, int64(1), count("holdfast.idempotency.outcomes", holdfastotel.KeyOutcome.String("queued")))
	assert.Equal(t, int64(1), count("holdfast.idempotency.outcomes", holdfastotel.KeyOutcome.String("replayed")), "queued replay")
	assert.Equal(t, int64(2), count("holdfast.stale.served"), "stale")
	assert.Positive(t, count("holdfast.degrade.gate.decisions", holdfastotel.KeyDecision.String("queue")))
	assert.Positive(t, histCount(t, rm, "http.server.request.duration", attribute.String("http.route", "/items/{id}")))
	assert.Positive(t, histCount(t, rm, "http.server.request.duration", holdfastotel.KeyDegraded.Bool(true)))
	assert.Positive(t, histCount(t, rm, "http.client.request.duration"))
	assert.Positive(t, histCount(t, rm, "holdfast.auth.verification.duration"))

	// Spans: each below the request's server span (one trace per request).
	spans := rec.Ended()
	byID := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byID[s.SpanContext().SpanID().String()] = s
	}
	root := func(s sdktrace.ReadOnlySpan) sdktrace.ReadOnlySpan {
		for s.Parent().IsValid() {
			p, ok := byID[s.Parent().SpanID().String()]
			if !ok {
				break
			}
			s = p
		}
		return s
	}
	find := func(name string, attr attribute.KeyValue) sdktrace.ReadOnlySpan {
		for _, s := range spans {
			if s.Name() != name {
				continue
			}
			for _, kv := range s.Attributes() {
				if kv == attr {
					return s
				}
			}
		}
		return nil
	}
	for _, c := range []struct {
		what, name string
		attr       attribute.KeyValue
		root       string
	}{
		{"verification", "holdfast.auth.verify", holdfastotel.KeyOutcome.String("ok"), "GET /items/{id}"},
		{"fallback", "holdfast.auth.verify", holdfastotel.KeyOutcome.String("degraded"), "GET /items/{id}"},
		{"retry", "holdfast.retry", holdfastotel.KeyAttempt.Int(2), "GET /items/{id}"},
		{"open breaker", "holdfast.breaker", holdfastotel.KeyOutcome.String("rejected"), "GET /items/{id}"},
		{"replay", "holdfast.idempotency", holdfastotel.KeyOutcome.String("replay"), "POST /orders"},
		{"queued replay", "holdfast.idempotency", holdfastotel.KeyOutcome.String("replayed"), "holdfast.idempotency"},
		{"queued replay", "holdfast.idempotency.replay", attribute.Int("http.response.status_code", 201), "holdfast.idempotency.replay"},
	} {
		s := find(c.name, c.attr)
		if assert.NotNil(t, s, c.what) {
			assert.Equal(t, c.root, root(s).Name(), c.what)
		}
	}
	var staleEvents, gateEvents int
	for _, s := range spans {
		for _, ev := range s.Events() {
			switch ev.Name {
			case "holdfast.stale":
				staleEvents++
			case "holdfast.gate":
				gateEvents++
			}
		}
	}
	assert.Equal(t, 2, staleEvents, "stale answer")
	assert.Positive(t, gateEvents)
	// The verification span is timed as the verification was.
	if s := find("holdfast.auth.verify", holdfastotel.KeyOutcome.String("ok")); s != nil {
		assert.False(t, s.EndTime().Before(s.StartTime()))
		assert.True(t, s.Parent().IsValid())
	}
}

// TestTransportPropagates checks that Transport injects its span's context
// into the outgoing request and Handler extracts it: one trace across a
// client and a server.
func TestTransportPropagates(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	inst, err := holdfastotel.New(holdfastotel.Config{TracerProvider: tp, Propagator: traceContext()})
	require.NoError(t, err)
	srv := httptest.NewServer(inst.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
	defer srv.Close()
	resp, err := (&http.Client{Transport: inst.Transport(nil)}).Get(srv.URL)
	require.NoError(t, err)
	resp.Body.Close()
	require.Eventually(t, func() bool { return len(rec.Ended()) == 2 }, 2*time.Second, 10*time.Millisecond)
	spans := rec.Ended()
	assert.Equal(t, spans[0].SpanContext().TraceID(), spans[1].SpanContext().TraceID())
}

func TestInstrumentRefusesUnknown(t *testing.T) {
	inst, err := holdfastotel.New(holdfastotel.Config{})
	require.NoError(t, err)
	var acfg authfallback.Config
	assert.Error(t, inst.Instrument(&acfg, 42))
	assert.NotNil(t, acfg.OnVerify, "the known targets are instrumented")
}

func TestGiveUpReason(t *testing.T) {
	assert.Equal(t, "budget", holdfastotel.GiveUpReason(retry.ErrBudgetExhausted))
	assert.Equal(t, "attempts", holdfastotel.GiveUpReason(retry.ErrMaxAttempts))
	assert.Equal(t, "deadline", holdfastotel.GiveUpReason(retry.ErrDeadline))
	assert.Equal(t, "not-replayable", holdfastotel.GiveUpReason(&retry.NotReplayableError{Method: "POST"}))
	assert.Equal(t, "other", holdfastotel.GiveUpReason(io.EOF))
}

// sum adds the points of counter name whose attributes include attrs.
func sum(t *testing.T, rm metricdata.ResourceMetrics, name string, attrs ...attribute.KeyValue) int64 {
	t.Helper()
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			s, ok := m.Data.(metricdata.Sum[int64])
			require.True(t, ok, "%s is a sum", name)
			for _, dp := range s.DataPoints {
				if has(dp.Attributes, attrs) {
					n += dp.Value
				}
			}
		}
	}
	return n
}

// histCount counts the measurements of histogram name with attrs.
func histCount(t *testing.T, rm metricdata.ResourceMetrics, name string, attrs ...attribute.KeyValue) uint64 {
	t.Helper()
	var n uint64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			assert.Equal(t, "s", m.Unit, name)
			h, ok := m.Data.(metricdata.Histogram[float64])
			require.True(t, ok, "%s is a histogram", name)
			for _, dp := range h.DataPoints {
				if has(dp.Attributes, attrs) {
					n += dp.Count
				}
			}
		}
	}
	return n
}

func has(set attribute.Set, attrs []attribute.KeyValue) bool {
	for _, kv := range attrs {
		v, ok := set.Value(kv.Key)
		if !ok || v != kv.Value {
			return false
		}
	}
	return true
}

type flakyTokens struct{ calls atomic.Int32 }

func (f *flakyTokens) Token() (*oauth2.Token, error) {
	if f.calls.Add(1) == 1 {
		return nil, errors.New("token endpoint down")
	}
	return &oauth2.Token{AccessToken: fmt.Sprint("t", f.calls.Load()), Expiry: time.Now().Add(time.Hour)}, nil
}

// TestTokenRefreshAndJWKSFetchSpans checks the spans and the duration of
// TokenSource refreshes, and the client spans of a Verifier's key fetches.
func TestTokenRefreshAndJWKSFetchSpans(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	inst, err := holdfastotel.New(holdfastotel.Config{MeterProvider: mp, TracerProvider: tp})
	require.NoError(t, err)

	tcfg := authfallback.TokenSourceConfig{Base: &flakyTokens{}, RetryBase: time.Millisecond, RetryMax: time.Millisecond}
	idp := authtest.New()
	defer idp.Close()
	acfg := authfallback.Config{Issuer: idp.Issuer(), Audience: []string{idp.Audience()}, JWKSURLs: []string{idp.JWKSURL()}, AuditLog: quiet}
	require.NoError(t, inst.Instrument(&tcfg, &acfg))
	ts := authfallback.NewTokenSource(tcfg)
	defer ts.Close()
	require.Eventually(t, func() bool { _, err := ts.Token(); return err == nil }, 5*time.Second, 5*time.Millisecond)
	v, err := authfallback.New(acfg)
	require.NoError(t, err)
	defer v.Close()
	require.NoError(t, v.Refresh(context.Background()))

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	assert.Positive(t, histCount(t, rm, "holdfast.auth.token_refresh.duration", holdfastotel.KeyOutcome.String("success")))
	assert.Positive(t, histCount(t, rm, "holdfast.auth.token_refresh.duration", holdfastotel.KeyOutcome.String("error")))
	names := map[string]int{}
	for _, s := range rec.Ended() {
		names[s.Name()]++
	}
	assert.Positive(t, names["holdfast.auth.token_refresh"], names)
	assert.Positive(t, names["holdfast.auth.fetch"], names)
}

// TestHooksCount calls the hooks that the service test does not reach and
// checks their counters.
func TestHooksCount(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	inst, err := holdfastotel.New(holdfastotel.Config{MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))})
	require.NoError(t, err)
	inst.OnRevocation(authfallback.RevocationEvent{Subject: "a"})
	inst.OnReconcile(authfallback.ReconcileEvent{Finding: authfallback.RevokedSubject})
	inst.OnReconcile(authfallback.ReconcileEvent{Finding: authfallback.RevokedSubject})
	inst.OnOfflineIssue(authfallback.OfflineIssueEvent{})
	inst.OnRefreshError(authfallback.RefreshErrorEvent{})
	inst.OnGiveUp(retry.GiveUpEvent{Reason: retry.ErrBudgetExhausted})
	inst.OnModeChange(degrade.ModeChange{From: degrade.Normal, To: degrade.ReadOnly, Forced: true})
	inst.OnGate(degrade.GateEvent{Decision: degrade.DecisionShed, Tier: degrade.Read, Mode: degrade.Normal})
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	assert.Equal(t, int64(1), sum(t, rm, "holdfast.auth.revocations"))
	assert.Equal(t, int64(2), sum(t, rm, "holdfast.auth.reconciled", holdfastotel.KeyFinding.String(authfallback.RevokedSubject)))
	assert.Equal(t, int64(1), sum(t, rm, "holdfast.auth.offline_issued"))
	assert.Equal(t, int64(1), sum(t, rm, "holdfast.auth.jwks.refresh_errors"))
	assert.Equal(t, int64(1), sum(t, rm, "holdfast.retry.give_ups", holdfastotel.KeyReason.String("budget")))
	assert.Equal(t, int64(1), sum(t, rm, "holdfast.degrade.mode_changes", holdfastotel.KeyTo.String("read-only"), holdfastotel.KeyForced.Bool(true)))
	assert.Equal(t, int64(1), sum(t, rm, "holdfast.degrade.gate.decisions", holdfastotel.KeyDecision.String("shed")))
	var gauge int64 = -1
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if m.Name == "holdfast.degrade.mode" {
			gauge = m.Data.(metricdata.Gauge[int64]).DataPoints[0].Value
		}
	}
	assert.Equal(t, int64(degrade.ReadOnly), gauge)
}

// BenchmarkInstrumented is the cost of the module on one request through
// the degrade gate: bare gate, the gate with the Instrumentation's OnGate,
// and both with the Handler wrapper (span + http.server.request.duration),
// with the SDK's providers and no exporter.
func BenchmarkInstrumented(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tracetest.NewSpanRecorder()))
	inst, err := holdfastotel.New(holdfastotel.Config{MeterProvider: mp, TracerProvider: tp})
	require.NoError(b, err)
	metricsOnly, err := holdfastotel.New(holdfastotel.Config{MeterProvider: mp}) // the global no-op tracer
	require.NoError(b, err)
	ok := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	plain := degrade.New(degrade.Config{})
	defer plain.Close()
	cfg := degrade.Config{}
	require.NoError(b, inst.Instrument(&cfg))
	hooked := degrade.New(cfg)
	defer hooked.Close()
	req := httptest.NewRequest(http.MethodGet, "/items/1", nil)
	for _, c := range []struct {
		name string
		h    http.Handler
	}{
		{"gate", plain.Handler(ok)},
		{"gate+OnGate", hooked.Handler(ok)},
		{"Handler+gate+OnGate", inst.Handler(hooked.Handler(ok))},
		{"Handler-metrics-only+gate", metricsOnly.Handler(plain.Handler(ok))},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			w := httptest.NewRecorder()
			for b.Loop() {
				c.h.ServeHTTP(w, req)
			}
		})
	}
}
