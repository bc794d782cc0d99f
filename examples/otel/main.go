// Command otel wires the hooks of every holdfast package to OpenTelemetry
// metrics (see Hooks) and shows them at work: it starts the example service
// (examples/internal/stack) against a fake IdP and a fake downstream on
// loopback, drives it through an IdP outage and a downstream outage, and
// prints the metrics it collected. In a real service, give Hooks a meter of
// your MeterProvider (OTLP, Prometheus, ...) and pass the result as
// stack.Config.Hooks, or copy the few lines each hook takes.
//
// It is its own Go module so that holdfast's root module imports no metrics
// framework.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/holdfast-go/holdfast/authfallback/authtest"
	"github.com/holdfast-go/holdfast/breaker"
	"github.com/holdfast-go/holdfast/examples/internal/downstream"
	"github.com/holdfast-go/holdfast/examples/internal/stack"
	"github.com/holdfast-go/holdfast/idempotency"
)

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "otel:", err)
		os.Exit(1)
	}
}

func run(out io.Writer) error {
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(context.Background())
	hooks, err := Hooks(provider.Meter("github.com/holdfast-go/holdfast/examples/otel"))
	if err != nil {
		return err
	}
	if err := drive(hooks); err != nil {
		return err
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		return err
	}
	for _, line := range format(rm) {
		fmt.Fprintln(out, line)
	}
	return nil
}

// drive runs the example service through an IdP outage and a downstream
// outage so that every hook fires.
func drive(hooks stack.Hooks) error {
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
		CallTimeout: 200 * time.Millisecond, BreakerDelay: 200 * time.Millisecond,
		DetectWindow: time.Second, ReplayEvery: 50 * time.Millisecond,
		AuditLog: quiet, Logger: quiet, Hooks: hooks,
	})
	if err != nil {
		return err
	}
	defer svc.Close()
	tok := idp.Issue(jwt.MapClaims{"sub": "otel-demo", "scope": "read write"})
	call := func(method, path, key, body string) int {
		r := httptest.NewRequest(method, path, strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+tok)
		if key != "" {
			r.Header.Set(idempotency.HeaderKey, key)
		}
		w := httptest.NewRecorder()
		svc.ServeHTTP(w, r)
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

// format renders the collected sums as "name{attrs} value" lines, sorted.
func format(rm metricdata.ResourceMetrics) []string {
	var lines []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			sum, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				continue
			}
			for _, dp := range sum.DataPoints {
				var attrs []string
				for _, kv := range dp.Attributes.ToSlice() {
					attrs = append(attrs, fmt.Sprintf("%s=%s", kv.Key, kv.Value.Emit()))
				}
				lines = append(lines, fmt.Sprintf("%s{%s} %d", m.Name, strings.Join(attrs, ","), dp.Value))
			}
		}
	}
	sort.Strings(lines)
	return lines
}
