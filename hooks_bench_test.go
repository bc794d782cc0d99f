package holdfast_test

// The cost of the outcome hooks: each hot path with its hook nil (the
// default: must allocate nothing more than without hooks) and set to a
// no-op, against the bare path in the same run.
//
//	go test -run '^$' -bench BenchmarkHooks -benchmem .

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
	"github.com/holdfast-go/holdfast/breaker"
	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/retry"
)

type stubRT struct{}

func (stubRT) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Body: http.NoBody, Header: http.Header{}, Request: r}, nil
}

func BenchmarkHooksVerify(b *testing.B) {
	idp := authtest.New()
	defer idp.Close()
	tok := idp.Issue(jwt.MapClaims{"sub": "bench"})
	for _, c := range []struct {
		name string
		hook func(authfallback.VerifyEvent)
	}{{"OnVerify-nil", nil}, {"OnVerify-set", func(authfallback.VerifyEvent) {}}} {
		v, err := authfallback.New(authfallback.Config{Issuer: idp.Issuer(), Audience: []string{idp.Audience()},
			JWKSURLs: []string{idp.JWKSURL()}, AuditLog: quiet(), OnVerify: c.hook})
		require.NoError(b, err)
		ctx := context.Background()
		_, err = v.Verify(ctx, tok)
		require.NoError(b, err)
		b.Run("repeated-token/"+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
		_ = v.Close()
	}
}

func BenchmarkHooksBreaker(b *testing.B) {
	req := httptest.NewRequest(http.MethodGet, "http://upstream.test/x", nil)
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	b.Run("transport/bare", func(b *testing.B) { benchRT(b, stubRT{}, req) })
	b.Run("transport/OnCall-nil", func(b *testing.B) {
		benchRT(b, breaker.New(breaker.Config{Timeout: -1}).Transport(stubRT{}), req)
	})
	b.Run("transport/OnCall-set", func(b *testing.B) {
		benchRT(b, breaker.New(breaker.Config{Timeout: -1, OnCall: func(breaker.CallEvent) {}}).Transport(stubRT{}), req)
	})
	b.Run("handler/bare", func(b *testing.B) { benchHandler(b, ok, req) })
	b.Run("handler/OnCall-nil", func(b *testing.B) {
		benchHandler(b, breaker.New(breaker.Config{Timeout: -1}).Handler(ok), req)
	})
	b.Run("handler/OnCall-set", func(b *testing.B) {
		benchHandler(b, breaker.New(breaker.Config{Timeout: -1, OnCall: func(breaker.CallEvent) {}}).Handler(ok), req)
	})
}

func BenchmarkHooksGate(b *testing.B) {
	req := httptest.NewRequest(http.MethodGet, "/items/1", nil)
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	b.Run("bare", func(b *testing.B) { benchHandler(b, ok, req) })
	for _, c := range []struct {
		name string
		hook func(degrade.GateEvent)
	}{{"OnGate-nil", nil}, {"OnGate-set", func(degrade.GateEvent) {}}} {
		ctrl := degrade.New(degrade.Config{OnGate: c.hook})
		b.Run(c.name, func(b *testing.B) { benchHandler(b, ctrl.Handler(ok), req) })
		ctrl.Close()
	}
}

func BenchmarkHooksIdempotencyReplay(b *testing.B) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"id":1}`)
	})
	for _, c := range []struct {
		name string
		hook func(idempotency.OutcomeEvent)
	}{{"OnOutcome-nil", nil}, {"OnOutcome-set", func(idempotency.OutcomeEvent) {}}} {
		store := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
		h := idempotency.New(idempotency.Config{Store: store, OnOutcome: c.hook}).Handler(ok)
		newReq := func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(`{"n":1}`))
			r.Header.Set("Authorization", "Bearer bench")
			r.Header.Set(idempotency.HeaderKey, `"k"`)
			return r
		}
		h.ServeHTTP(httptest.NewRecorder(), newReq())
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, newReq())
				if w.Code != http.StatusCreated {
					b.Fatal(w.Code)
				}
			}
		})
		_ = store.Close()
	}
}

func BenchmarkHooksRetry(b *testing.B) {
	req := httptest.NewRequest(http.MethodGet, "http://upstream.test/x", nil)
	b.Run("bare", func(b *testing.B) { benchRT(b, stubRT{}, req) })
	b.Run("OnRetry-nil", func(b *testing.B) { benchRT(b, &retry.Transport{Base: stubRT{}}, req) })
	b.Run("OnRetry-set", func(b *testing.B) {
		benchRT(b, &retry.Transport{Base: stubRT{}, OnRetry: func(retry.RetryEvent) {}, OnGiveUp: func(retry.GiveUpEvent) {}}, req)
	})
}

func benchRT(b *testing.B, rt http.RoundTripper, req *http.Request) {
	b.ReportAllocs()
	for b.Loop() {
		resp, err := rt.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
}

func benchHandler(b *testing.B, h http.Handler, req *http.Request) {
	b.ReportAllocs()
	w := httptest.NewRecorder()
	for b.Loop() {
		h.ServeHTTP(w, req)
	}
}
