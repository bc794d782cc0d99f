// Command otel instruments the example service (examples/internal/stack)
// with holdfast's OpenTelemetry module (github.com/holdfast-go/holdfast/otel)
// and shows it at work: it starts the service against a fake IdP and a fake
// downstream on loopback, drives it through an IdP outage and a downstream
// outage, and prints what the OpenTelemetry Prometheus exporter serves at
// /metrics (holdfast's and the HTTP metrics) and the spans recorded. With
// -addr it then keeps serving /metrics there for a Prometheus to scrape.
//
// It is its own Go module so that holdfast's root module imports no
// telemetry framework.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/holdfast-go/holdfast/authfallback/authtest"
	"github.com/holdfast-go/holdfast/breaker"
	"github.com/holdfast-go/holdfast/examples/internal/downstream"
	"github.com/holdfast-go/holdfast/examples/internal/stack"
	"github.com/holdfast-go/holdfast/idempotency"
	holdfastotel "github.com/holdfast-go/holdfast/otel"
)

func main() {
	addr := flag.String("addr", "", "after the run, serve /metrics on this address (e.g. 127.0.0.1:9464) until interrupted")
	flag.Parse()
	if err := run(os.Stdout, *addr); err != nil {
		fmt.Fprintln(os.Stderr, "otel:", err)
		os.Exit(1)
	}
}

func run(out io.Writer, addr string) error {
	// Metrics: the OpenTelemetry Prometheus exporter, on a registry of our
	// own, served by promhttp.
	reg := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	defer mp.Shutdown(context.Background())
	// Traces: kept in memory here; an OTLP exporter in a real service.
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	defer tp.Shutdown(context.Background())

	inst, err := holdfastotel.New(holdfastotel.Config{MeterProvider: mp, TracerProvider: tp, Route: route})
	if err != nil {
		return err
	}
	if err := drive(inst); err != nil {
		return err
	}

	metrics := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer metrics.Close()
	resp, err := http.Get(metrics.URL)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "# /metrics (holdfast and HTTP series)")
	for _, line := range strings.Split(string(body), "\n") {
		if (strings.HasPrefix(line, "holdfast_") || strings.HasPrefix(line, "http_")) && !strings.Contains(line, "_bucket{") {
			fmt.Fprintln(out, line)
		}
	}
	fmt.Fprintln(out, "# spans")
	for _, line := range formatSpans(spans.GetSpans()) {
		fmt.Fprintln(out, line)
	}
	if addr == "" {
		return nil
	}
	fmt.Fprintf(os.Stderr, "serving /metrics on http://%s/metrics\n", addr)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// route names the example service's routes (the http.route attribute).
func route(r *http.Request) string {
	switch {
	case strings.HasPrefix(r.URL.Path, "/items/"):
		return "/items/{id}"
	case r.URL.Path == "/orders":
		return "/orders"
	}
	return ""
}

// formatSpans counts the spans by name: "name count", sorted.
func formatSpans(spans tracetest.SpanStubs) []string {
	n := map[string]int{}
	for _, s := range spans {
		n[s.Name]++
	}
	var lines []string
	for name, c := range n {
		lines = append(lines, fmt.Sprintf("%s %d", name, c))
	}
	sort.Strings(lines)
	return lines
}

// drive runs the example service, instrumented, through an IdP outage and
// a downstream outage so that every hook fires.
func drive(inst *holdfastotel.Instrumentation) error {
	quiet := slog.New(slog.DiscardHandler)
	idp := authtest.New()
	defer idp.Close()
	ds := downstream.New()
	dsrv := httptest.NewServer(ds)
	defer dsrv.Close()
	dir, err := os.MkdirTemp("", "holdfast-otel")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	svc, err := stack.New(stack.Config{
		Issuer: idp.Issuer(), Audience: []string{idp.Audience()}, JWKSURLs: []string{idp.JWKSURL()},
		CacheFile: filepath.Join(dir, "jwks.json"), Downstream: dsrv.URL,
		// CallTimeout: the stack's 2 s; the outage below is 503s, and a
		// shorter one can time out a healthy call on a loaded machine.
		BreakerDelay: 200 * time.Millisecond,
		DetectWindow: time.Second, ReplayEvery: 50 * time.Millisecond,
		AuditLog: quiet, Logger: quiet, Hooks: Hooks(inst),
		Base: inst.Transport(nil), // a client span per downstream attempt
	})
	if err != nil {
		return err
	}
	defer svc.Close()
	handler := inst.Handler(svc) // the request's span, outermost
	tok := idp.Issue(jwt.MapClaims{"sub": "otel-demo", "scope": "read write"})
	call := func(method, path, key, body string) int {
		r := httptest.NewRequest(method, path, strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+tok)
		if key != "" {
			r.Header.Set(idempotency.HeaderKey, key)
		}
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, r)
		return w.Code
	}
	ctx := context.Background()

	call(http.MethodGet, "/items/1", "", "")
	call(http.MethodPost, "/orders", `"a"`, `{"write_id":"a"}`)
	call(http.MethodPost, "/orders", `"a"`, `{"write_id":"a"}`) // replayed

	idp.SetDown(true) // IdP outage: fallback mode
	_ = svc.Verifier.Refresh(ctx)
	call(http.MethodGet, "/items/1", "", "")
	idp.SetDown(false)
	_ = svc.Verifier.Refresh(ctx)

	ds.SetMode(downstream.Fail5xx) // downstream outage: retries, breaker, stale, queue
	host := dsrv.Listener.Addr().String()
	for i := 0; i < 50 && svc.ClientBreaker.State(host) != breaker.Open; i++ {
		call(http.MethodGet, "/items/1", "", "")
	}
	call(http.MethodPost, "/orders", `"b"`, `{"write_id":"b"}`) // queued
	ds.SetMode(downstream.Healthy)
	deadline := time.Now().Add(5 * time.Second)
	for svc.Controller.Mode() != 0 && time.Now().Before(deadline) {
		call(http.MethodGet, "/items/2", "", "")
		time.Sleep(20 * time.Millisecond)
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = svc.Drain(dctx)
	return err
}
