package idempotency_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/internal/caller"
)

// TestEndToEnd runs the failure cases over real HTTP: a panic, a crash
// between claim and completion, a cross-tenant replay attempt and a store
// outage.
func TestEndToEnd(t *testing.T) {
	store := &flakyStore{Store: newStore(t)}
	x := idempotency.New(idempotency.Config{Store: store, Lease: 400 * time.Millisecond})
	var runs atomic.Int64
	var panicNext atomic.Bool
	app := x.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		if panicNext.CompareAndSwap(true, false) {
			panic(http.ErrAbortHandler) // net/http drops the connection quietly
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "created "+string(body)+" for "+r.Header.Get("Authorization"))
	}))
	srv := httptest.NewServer(app)
	defer srv.Close()

	send := func(t *testing.T, key, user, body string) (*http.Response, string, error) {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/payments", strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Idempotency-Key", key)
		req.Header.Set("Authorization", "Bearer "+user)
		resp, err := srv.Client().Do(req)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b), nil
	}

	t.Run("panic", func(t *testing.T) {
		runs.Store(0)
		panicNext.Store(true)
		_, _, err := send(t, "p1", "alice", "10")
		require.Error(t, err, "the connection is dropped")
		resp, body, err := send(t, "p1", "alice", "10")
		require.NoError(t, err)
		assert.Equal(t, http.StatusCreated, resp.StatusCode, "the key was released: the retry runs")
		assert.Equal(t, "created 10 for Bearer alice", body)
		assert.Equal(t, int64(2), runs.Load())
	})

	t.Run("crash between claim and completion", func(t *testing.T) {
		runs.Store(0)
		store.crashed.Store(true) // runs, then can neither renew, complete nor release
		resp, _, err := send(t, "c1", "alice", "20")
		require.NoError(t, err)
		require.Equal(t, http.StatusCreated, resp.StatusCode)
		store.crashed.Store(false)

		resp, _, err = send(t, "c1", "alice", "20")
		require.NoError(t, err)
		assert.Equal(t, http.StatusConflict, resp.StatusCode, "the dead claim holds until its lease ends")
		assert.Equal(t, "1", resp.Header.Get("Retry-After"))

		var last *http.Response
		require.Eventually(t, func() bool {
			last, _, err = send(t, "c1", "alice", "20")
			return err == nil && last.StatusCode != http.StatusConflict
		}, 5*time.Second, 20*time.Millisecond)
		assert.Equal(t, http.StatusCreated, last.StatusCode, "taken over after the lease")
		assert.Equal(t, int64(2), runs.Load())
		resp, _, err = send(t, "c1", "alice", "20")
		require.NoError(t, err)
		assert.Equal(t, "true", resp.Header.Get(idempotency.HeaderReplayed))
	})

	t.Run("cross-tenant replay fails", func(t *testing.T) {
		runs.Store(0)
		resp, body, err := send(t, "t1", "alice", "30")
		require.NoError(t, err)
		require.Equal(t, http.StatusCreated, resp.StatusCode)
		require.Contains(t, body, "alice")

		resp, body, err = send(t, "t1", "mallory", "30")
		require.NoError(t, err)
		assert.Empty(t, resp.Header.Get(idempotency.HeaderReplayed))
		assert.NotContains(t, body, "alice", "mallory never sees alice's response")
		assert.Equal(t, int64(2), runs.Load())
	})

	t.Run("store outage", func(t *testing.T) {
		runs.Store(0)
		store.down.Store(true)
		resp, body, err := send(t, "o1", "alice", "40")
		require.NoError(t, err)
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
		assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
		assert.Contains(t, body, "idempotency-store-unavailable")
		assert.Zero(t, runs.Load(), "fail closed: nothing ran")

		store.down.Store(false)
		resp, _, err = send(t, "o1", "alice", "40")
		require.NoError(t, err)
		assert.Equal(t, http.StatusCreated, resp.StatusCode)
		resp, _, err = send(t, "o1", "alice", "40")
		require.NoError(t, err)
		assert.Equal(t, "true", resp.Header.Get(idempotency.HeaderReplayed))
		assert.Equal(t, int64(1), runs.Load(), "nothing lost, nothing doubled")
	})
}

// TestEndToEndRealTokens runs authfallback's Handler with real tokens from
// a fake IdP in front of the handler, over real HTTP: a retry with a
// refreshed token (same subject) is a replay; another subject gets a record
// of its own; a write queued with a token that then expires runs once, as
// its caller, and the caller's new token gets its outcome.
func TestEndToEndRealTokens(t *testing.T) {
	idp := authtest.New()
	t.Cleanup(idp.Close)
	v, err := authfallback.New(authfallback.Config{
		Issuer: idp.Issuer(), Audience: []string{idp.Audience()}, JWKSURLs: []string{idp.JWKSURL()},
		CacheFile: filepath.Join(t.TempDir(), "jwks.json"), AuditLog: slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = v.Close() })
	x := idempotency.New(idempotency.Config{Store: newStore(t)})
	var (
		mu  sync.Mutex
		ran []string
	)
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		sub := caller.FromContext(r.Context()).Subject
		mu.Lock()
		ran = append(ran, sub+":"+string(body))
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "order "+string(body)+" for "+sub)
	})
	var degraded atomic.Bool
	live := v.Handler(x.Handler(app))
	queue := v.Handler(http.HandlerFunc(x.Enqueue))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if degraded.Load() {
			queue.ServeHTTP(w, r)
			return
		}
		live.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	send := func(token, key, body string) (int, string, bool) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/orders", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Idempotency-Key", key)
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header.Get(idempotency.HeaderReplayed) == "true"
	}
	issue := func(sub string, ttl time.Duration, jti string) string {
		return idp.Issue(jwt.MapClaims{"sub": sub, "scope": "write", "jti": jti, "exp": time.Now().Add(ttl).Unix()})
	}

	status, body, replayed := send(issue("alice", time.Hour, "t1"), "k1", "1")
	assert.Equal(t, http.StatusCreated, status)
	assert.False(t, replayed)
	status, again, replayed := send(issue("alice", time.Hour, "t2"), "k1", "1")
	assert.Equal(t, http.StatusCreated, status)
	assert.True(t, replayed, "a refreshed token's retry is a replay")
	assert.Equal(t, body, again)
	_, bobs, replayed := send(issue("bob", time.Hour, "b1"), "k1", "1")
	assert.False(t, replayed, "another subject: its own record")
	assert.Equal(t, "order 1 for bob", bobs)

	degraded.Store(true)
	// exp is in whole seconds: rounded up, the token is valid for one to
	// two seconds (rounded down, it could expire before the request).
	exp := time.Now().Add(time.Second).Truncate(time.Second).Add(time.Second)
	short := idp.Issue(jwt.MapClaims{"sub": "alice", "scope": "write", "jti": "t3", "exp": exp.Unix()})
	status, _, _ = send(short, "k2", "2")
	require.Equal(t, http.StatusAccepted, status)
	time.Sleep(time.Until(exp.Add(100 * time.Millisecond)))
	degraded.Store(false)
	status, _, _ = send(short, "k2", "2")
	require.Equal(t, http.StatusUnauthorized, status, "the queued write's token has expired")
	n, err := x.Replay(t.Context(), x.Handler(app))
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	status, body, replayed = send(issue("alice", time.Hour, "t4"), "k2", "2")
	assert.Equal(t, http.StatusCreated, status)
	assert.True(t, replayed, "the new token gets the queued write's outcome")
	assert.Equal(t, "order 2 for alice", body)
	mu.Lock()
	assert.Equal(t, []string{"alice:1", "bob:1", "alice:2"}, ran, "each write ran once, as its caller")
	mu.Unlock()
}
