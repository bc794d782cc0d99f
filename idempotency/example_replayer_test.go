package idempotency_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
	"github.com/holdfast-go/holdfast/idempotency"
)

// ExampleReplayer queues a write during an outage, behind authfallback's
// Handler, and lets a Replayer run it as its verified caller once the
// service recovers: the caller polls with a new token and gets the outcome.
func ExampleReplayer() {
	idp := authtest.New() // a fake IdP on loopback
	defer idp.Close()
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	verifier, err := authfallback.New(authfallback.Config{
		Issuer: idp.Issuer(), Audience: []string{idp.Audience()}, JWKSURLs: []string{idp.JWKSURL()},
		CacheFile: filepath.Join(dir, "jwks.json"), AuditLog: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer verifier.Close()

	store := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
	defer store.Close()
	x := idempotency.New(idempotency.Config{Store: store})
	orders := x.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		sub := "?"
		if res, ok := authfallback.FromContext(r.Context()); ok {
			sub = res.Subject // a live request
		} else if c := idempotency.CallerFromContext(r.Context()); c != nil {
			sub = c.Subject // a replayed one: no token, its recorded caller
		}
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "order %s for %s", b, sub)
	}))

	var degraded atomic.Bool
	degraded.Store(true)
	queue := verifier.Handler(http.HandlerFunc(x.Enqueue)) // authenticated, then queued
	live := verifier.Handler(orders)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if degraded.Load() && r.Method == http.MethodPost {
			queue.ServeHTTP(w, r)
			return
		}
		live.ServeHTTP(w, r)
	}))
	defer srv.Close()

	send := func(token string) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/orders", strings.NewReader("7"))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Idempotency-Key", `"k1"`)
		resp, err := srv.Client().Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusAccepted {
			b = []byte("queued")
		}
		fmt.Println(resp.StatusCode, resp.Header.Get(idempotency.HeaderReplayed), string(b))
	}
	send(idp.Issue(jwt.MapClaims{"sub": "alice", "jti": "first"}))

	// The service recovers; the replayer runs what waits (the chain without
	// the gate and without authentication).
	done := make(chan struct{})
	rp := idempotency.NewReplayer(idempotency.ReplayerConfig{
		Idempotency: x,
		Handler:     orders,
		Healthy:     func() bool { return !degraded.Load() },
		OnReplayed:  func(ev idempotency.ReplayEvent) { fmt.Println("replayed", ev.Method, ev.URL, ev.Status); close(done) },
	})
	defer rp.Close()
	degraded.Store(false)
	rp.Kick() // e.g. from degrade's OnModeChange
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}

	send(idp.Issue(jwt.MapClaims{"sub": "alice", "jti": "refreshed"}))
	// Output:
	// 202  queued
	// replayed POST /orders 201
	// 201 true order 7 for alice
}
