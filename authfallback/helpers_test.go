package authfallback_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
)

// syncBuffer is a bytes.Buffer safe for concurrent writers (slog handlers).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

type harness struct {
	idp   *authtest.Server
	v     *authfallback.Verifier
	audit *syncBuffer
	cfg   authfallback.Config
}

// newHarness starts a Verifier against idp; mod may change the Config.
func newHarness(t *testing.T, idp *authtest.Server, mod func(*authfallback.Config)) *harness {
	t.Helper()
	h := &harness{idp: idp, audit: &syncBuffer{}}
	h.cfg = authfallback.Config{
		Issuer:       idp.Issuer(),
		Audience:     []string{idp.Audience()},
		JWKSURLs:     []string{idp.JWKSURL()},
		FetchTimeout: 2 * time.Second,
		HTTPClient:   &http.Client{},
		AuditLog:     slog.New(slog.NewJSONHandler(h.audit, nil)),
	}
	if mod != nil {
		mod(&h.cfg)
	}
	v, err := authfallback.New(h.cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = v.Close() })
	h.v = v
	return h
}

func newIdP(t *testing.T, alg string) *authtest.Server {
	t.Helper()
	idp := authtest.NewWithConfig(authtest.Config{Algorithm: alg})
	t.Cleanup(idp.Close)
	return idp
}

// serve runs one request with the bearer token through the Handler and
// returns the recorder and the Result the inner handler saw (nil if none).
func (h *harness) serve(token string) (*httptest.ResponseRecorder, *authfallback.Result) {
	var got *authfallback.Result
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ = authfallback.FromContext(r.Context())
		w.WriteHeader(http.StatusNoContent)
	})
	req := httptest.NewRequest(http.MethodGet, "/orders", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.v.Handler(next).ServeHTTP(rec, req)
	return rec, got
}

func (h *harness) verify(token string) (*authfallback.Result, error) {
	return h.v.Verify(context.Background(), token)
}
