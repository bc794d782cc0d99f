package holdfastotel_test

// The README's OpenTelemetry snippet, compiled and run:
// TestReadmeOTelIsThisFile checks that the block between the markers below
// is, line for line (one tab of indentation less), the README's snippet;
// TestReadmeOTelInstruments runs it.

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/breaker"
	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/idempotency"
	holdfastotel "github.com/holdfast-go/holdfast/otel"
	"github.com/holdfast-go/holdfast/retry"
)

// otelWired is what the snippet leaves behind, for the test to use.
type otelWired struct {
	handler     http.Handler
	client      *http.Client
	degradeCfg  degrade.Config
	authCfg     authfallback.Config
	idemCfg     idempotency.Config
	breakerCfg  breaker.Config
	replayerCfg idempotency.ReplayerConfig
}

// readmeOTel runs the README's snippet; its free names are the service's
// (the Wiring section's configurations, kept as values until New).
func readmeOTel(mp metric.MeterProvider, tp trace.TracerProvider, mux *http.ServeMux,
	handler http.Handler, client *http.Client, degradeCfg degrade.Config, authCfg authfallback.Config,
	idemCfg idempotency.Config, breakerCfg breaker.Config, retryTransport *retry.Transport,
	stale *degrade.Stale, replayerCfg idempotency.ReplayerConfig) otelWired {
	// README:otel begin
	inst, err := holdfastotel.New(holdfastotel.Config{
		MeterProvider:  mp,
		TracerProvider: tp,
		Route:          func(r *http.Request) string { _, p := mux.Handler(r); return p }, // http.route
	})
	if err != nil {
		log.Fatal(err)
	}
	// Before each New: the hooks are chained after yours.
	if err := inst.Instrument(&degradeCfg, &authCfg, &idemCfg, &breakerCfg, retryTransport, stale, &replayerCfg); err != nil {
		log.Fatal(err)
	}
	// Outermost, so holdfast's spans sit below the request's.
	handler = inst.Handler(handler)
	client.Transport = inst.Transport(client.Transport)
	// README:otel end
	return otelWired{handler, client, degradeCfg, authCfg, idemCfg, breakerCfg, replayerCfg}
}

func TestReadmeOTelIsThisFile(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	src, err := os.ReadFile("readme_test.go")
	require.NoError(t, err)
	block := section(t, string(readme), "\n## OpenTelemetry\n", "```go\n", "```\n")
	code := section(t, string(src), "", "\t// README:otel begin\n", "\t// README:otel end\n")
	var lines []string
	for _, l := range strings.SplitAfter(code, "\n") {
		lines = append(lines, strings.TrimPrefix(l, "\t"))
	}
	assert.Equal(t, strings.Join(lines, ""), block,
		"README.md's OpenTelemetry snippet and readmeOTel in otel/readme_test.go must be the same code")
}

// section returns the text of s between begin and end, after heading.
func section(t *testing.T, s, heading, begin, end string) string {
	t.Helper()
	i := strings.Index(s, heading)
	require.GreaterOrEqual(t, i, 0, "no %q", heading)
	s = s[i+len(heading):]
	i = strings.Index(s, begin)
	require.GreaterOrEqual(t, i, 0, "no %q", begin)
	s = s[i+len(begin):]
	j := strings.Index(s, end)
	require.GreaterOrEqual(t, j, 0, "no %q", end)
	return s[:j]
}

// TestReadmeOTelInstruments runs the snippet and checks what it promises:
// every configuration gets its hooks, the handler's requests get a span
// named by the mux's route and the server duration metric, the client's
// calls the client duration metric.
func TestReadmeOTelInstruments(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	defer upstream.Close()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "item") })
	retryTransport := &retry.Transport{}
	w := readmeOTel(mp, tp, mux, mux, &http.Client{Transport: retryTransport},
		degrade.Config{}, authfallback.Config{}, idempotency.Config{}, breaker.Config{}, retryTransport,
		&degrade.Stale{}, idempotency.ReplayerConfig{Handler: mux})

	assert.NotNil(t, w.degradeCfg.OnGate, "degrade.Config instrumented")
	assert.NotNil(t, w.authCfg.OnVerify, "authfallback.Config instrumented")
	assert.NotNil(t, w.idemCfg.OnOutcome, "idempotency.Config instrumented")
	assert.NotNil(t, w.breakerCfg.OnCall, "breaker.Config instrumented")
	assert.NotNil(t, retryTransport.OnRetry, "retry.Transport instrumented")
	_, same := w.replayerCfg.Handler.(*http.ServeMux)
	assert.False(t, same, "ReplayerConfig's Handler wrapped")

	rec := httptest.NewRecorder()
	w.handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/items/7", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	resp, err := w.client.Get(upstream.URL)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()

	var route string
	for _, s := range spans.Ended() {
		if s.SpanKind() == trace.SpanKindServer {
			for _, a := range s.Attributes() {
				if a.Key == "http.route" {
					route = a.Value.AsString()
				}
			}
		}
	}
	assert.Equal(t, "/items/{id}", route, "the server span's http.route comes from the mux")
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	seen := map[string]bool{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			seen[m.Name] = true
		}
	}
	assert.True(t, seen["http.server.request.duration"], "server duration recorded: %v", seen)
	assert.True(t, seen["http.client.request.duration"], "client duration recorded: %v", seen)
}
