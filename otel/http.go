package holdfastotel

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/holdfast-go/holdfast/degrade"
)

// Handler returns a handler that serves each request to next inside a
// server span (its parent extracted from the request's headers by
// Config.Propagator) and records http.server.request.duration. Put it
// outermost, so that holdfast's hooks below it attach their spans and
// events to the request's span. The span and the metric carry
// http.request.method, http.route (Config.Route), http.response.status_code
// and holdfast.degraded (the response carried Holdfast-Degraded).
func (i *Instrumentation) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ctx := i.prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		method := methodOf(r.Method)
		ctx, span := i.tracer.Start(ctx, method, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithTimestamp(start), trace.WithAttributes(keyMethod.String(method)))
		r2 := r.WithContext(ctx)
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			status := sw.status
			if status == 0 {
				status = http.StatusOK
			}
			degraded := w.Header().Get(degrade.HeaderDegraded) != ""
			route := i.route(r2)
			if j := strings.IndexByte(route, ' '); j >= 0 {
				route = route[j+1:] // a ServeMux pattern "GET /items/{id}": the path template only
			}
			errType := ""
			if status >= 500 {
				errType = strconv.Itoa(status)
			}
			attrs := func() []attribute.KeyValue {
				a := []attribute.KeyValue{keyMethod.String(method), keyStatus.Int(status), KeyDegraded.Bool(degraded)}
				if route != "" {
					a = append(a, keyRoute.String(route))
				}
				if errType != "" {
					a = append(a, keyErrType.String(errType))
				}
				return a
			}
			i.serverDur.Record(ctx, time.Since(start).Seconds(), i.sets.server.get(httpKey{method, route, errType, status, degraded}, attrs))
			if span.IsRecording() {
				if route != "" {
					span.SetName(method + " " + route)
				}
				if errType != "" {
					span.SetStatus(codes.Error, "")
				}
				span.SetAttributes(attrs()...)
			}
			span.End()
		}()
		next.ServeHTTP(sw, r2)
	})
}

// ReplayHandler returns next with every request (a queued request the
// Replayer runs) served inside a holdfast.idempotency.replay span, so the
// spans of its replay sit below one root. Instrument sets it on an
// idempotency.ReplayerConfig.
func (i *Instrumentation) ReplayHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, span := i.tracer.Start(r.Context(), "holdfast.idempotency.replay",
			trace.WithAttributes(keyMethod.String(methodOf(r.Method))))
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if sw.status != 0 {
				span.SetAttributes(keyStatus.Int(sw.status))
				if sw.status >= 500 {
					span.SetStatus(codes.Error, "")
				}
			}
			span.End()
		}()
		next.ServeHTTP(sw, r.WithContext(ctx))
	})
}

// Transport returns a RoundTripper that sends each request through base
// (if nil, http.DefaultTransport) inside a client span, its context
// injected into the request's headers (on a clone: the caller's request is
// not modified), and records http.client.request.duration. Put it
// outermost on the client side, so that retry and breaker hooks attach
// their spans below the call's span; each attempt is a call of base.
func (i *Instrumentation) Transport(base http.RoundTripper) http.RoundTripper {
	return &transport{i: i, base: base}
}

type transport struct {
	i    *Instrumentation
	base http.RoundTripper
	name string
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	i := t.i
	start := time.Now()
	method := methodOf(req.Method)
	name := t.name
	if name == "" {
		name = method
	}
	host := req.URL.Hostname()
	ctx, span := i.tracer.Start(req.Context(), name, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithTimestamp(start), trace.WithAttributes(keyMethod.String(method), keyServer.String(host)))
	r := req.Clone(ctx)
	i.prop.Inject(ctx, propagation.HeaderCarrier(r.Header))
	base := t.base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(r)
	status, errType, degraded := 0, "", false
	switch {
	case err != nil:
		errType = "_OTHER"
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	default:
		status = resp.StatusCode
		if status >= 500 {
			errType = strconv.Itoa(status)
			span.SetStatus(codes.Error, "")
		}
		degraded = resp.Header.Get(degrade.HeaderDegraded) != ""
	}
	attrs := func() []attribute.KeyValue {
		a := []attribute.KeyValue{keyMethod.String(method), keyServer.String(host)}
		if status != 0 {
			a = append(a, keyStatus.Int(status))
		}
		if errType != "" {
			a = append(a, keyErrType.String(errType))
		}
		if degraded {
			a = append(a, KeyDegraded.Bool(true))
		}
		return a
	}
	i.clientDur.Record(ctx, time.Since(start).Seconds(), i.sets.client.get(httpKey{method, host, errType, status, degraded}, attrs))
	if span.IsRecording() {
		span.SetAttributes(attrs()...)
	}
	span.End()
	return resp, err
}

// methodOf bounds the method's cardinality as the conventions ask.
func methodOf(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "_OTHER"
}

// statusWriter records the status written; Unwrap lets
// http.ResponseController reach the writer below.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
