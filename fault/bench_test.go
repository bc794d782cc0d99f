package fault_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/holdfast-go/holdfast/fault"
)

type okTransport struct{ resp *http.Response }

func (t okTransport) RoundTrip(*http.Request) (*http.Response, error) { return t.resp, nil }

// BenchmarkTransport compares an inert Injector's Transport (no fault for
// its dependency, one for another) with the bare base it wraps: the cost a
// team pays for leaving fault injection wired in production.
func BenchmarkTransport(b *testing.B) {
	base := okTransport{resp: &http.Response{StatusCode: 200, Body: http.NoBody}}
	req := httptest.NewRequest(http.MethodGet, "http://dep/", nil)
	in := fault.New(fault.Config{})
	_ = in.Set("other", fault.Fault{Kind: fault.Outage})
	for _, bb := range []struct {
		name string
		rt   http.RoundTripper
	}{{"baseline", base}, {"inert", in.Transport("dep", base)}} {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = bb.rt.RoundTrip(req)
			}
		})
	}
}

// BenchmarkHandler compares an inert Injector's Handler with the bare
// handler.
func BenchmarkHandler(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	in := fault.New(fault.Config{})
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	w := httptest.NewRecorder()
	for _, bb := range []struct {
		name string
		h    http.Handler
	}{{"baseline", h}, {"inert", in.Handler("dep", h)}} {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bb.h.ServeHTTP(w, req)
			}
		})
	}
}
