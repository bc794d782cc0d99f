package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/holdfast-go/holdfast/examples/internal/stack"
)

// naive is the same service without holdfast, written the way a great deal
// of Go code is: golang-jwt with keyfunc's defaults (no cache file), a
// downstream client that retries every method three times without backoff
// or budget, no breaker, no idempotency, no stale cache.
type naive struct {
	issuer, audience, jwksURL string

	mu     sync.Mutex
	kf     keyfunc.Keyfunc
	cancel context.CancelFunc
	app    *stack.App
}

func newNaive(issuer, audience, jwksURL, downstream string, callTimeout time.Duration) *naive {
	n := &naive{issuer: issuer, audience: audience, jwksURL: jwksURL}
	rt := &naiveRetry{base: http.DefaultTransport.(*http.Transport).Clone(), attempts: 3, timeout: callTimeout}
	n.app = &stack.App{Client: &http.Client{Transport: rt}, Downstream: downstream}
	n.start()
	return n
}

// start is the service's start-up: keyfunc.NewDefault fetches the JWKS once.
// When the IdP is down that fetch fails quietly and the service starts with
// no keys; keyfunc then refreshes on an unknown kid at most once per
// 5 minutes, and on its own once an hour.
func (n *naive) start() {
	ctx, cancel := context.WithCancel(context.Background())
	kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{n.jwksURL}, keyfunc.Override{
		// The defaults, but quiet: the drill prints its own table.
		RefreshErrorHandlerFunc: func(string) func(context.Context, error) {
			return func(context.Context, error) {}
		},
	})
	n.mu.Lock()
	old := n.cancel
	n.kf, n.cancel = kf, cancel
	if err != nil {
		n.kf = nil
	}
	n.mu.Unlock()
	if old != nil {
		old()
	}
}

// restart models a process restart.
func (n *naive) restart() { n.start() }

func (n *naive) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cancel != nil {
		n.cancel()
	}
}

func (n *naive) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n.mu.Lock()
	kf := n.kf
	n.mu.Unlock()
	if kf == nil {
		http.Error(w, "no keys", http.StatusInternalServerError)
		return
	}
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	_, err := jwt.Parse(raw, kf.Keyfunc,
		jwt.WithValidMethods([]string{"RS256"}),
		jwt.WithIssuer(n.issuer),
		jwt.WithAudience(n.audience),
		jwt.WithExpirationRequired())
	if err != nil {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	n.app.ServeHTTP(w, r)
}

// naiveRetry retries every method on an error or a 5xx, at once, up to
// attempts times: the loop many services carry.
type naiveRetry struct {
	base     http.RoundTripper
	attempts int
	timeout  time.Duration
}

func (t *naiveRetry) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
	}
	var resp *http.Response
	var err error
	for i := 0; i < t.attempts; i++ {
		ctx, cancel := context.WithTimeout(req.Context(), t.timeout)
		r2 := req.Clone(ctx)
		if body != nil {
			r2.Body = io.NopCloser(bytes.NewReader(body))
		}
		resp, err = t.base.RoundTrip(r2)
		if err == nil && resp.StatusCode < 500 {
			// Read the body before the attempt's context ends.
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			cancel()
			if rerr != nil {
				err = rerr
				continue
			}
			resp.Body = io.NopCloser(bytes.NewReader(b))
			return resp, nil
		}
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		cancel()
	}
	if err == nil {
		resp.Body = http.NoBody
	}
	return resp, err
}
