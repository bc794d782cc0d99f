package stack

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/examples/internal/downstream"
	"github.com/holdfast-go/holdfast/idempotency"
)

type env struct {
	idp   *authtest.Server
	ds    *downstream.Server
	cfg   Config
	token string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	idp := authtest.New()
	t.Cleanup(idp.Close)
	ds := downstream.New()
	dsrv := httptest.NewServer(ds)
	t.Cleanup(dsrv.Close)
	store := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
	t.Cleanup(func() { _ = store.Close() })
	quiet := slog.New(slog.DiscardHandler)
	return &env{
		idp: idp, ds: ds,
		token: idp.Issue(jwt.MapClaims{"sub": "alice", "scope": "read write"}),
		cfg: Config{
			Issuer: idp.Issuer(), Audience: []string{idp.Audience()}, JWKSURLs: []string{idp.JWKSURL()},
			CacheFile:  filepath.Join(t.TempDir(), "jwks.json"),
			KeyRefresh: 200 * time.Millisecond, Downstream: dsrv.URL,
			// CallTimeout: the stack's default (2 s), far above what a call
			// to the in-process downstream takes on a loaded machine: the
			// tests' outages are 503s, never timeouts.
			BreakerDelay: 200 * time.Millisecond,
			DetectWindow: time.Second, ReplayEvery: 50 * time.Millisecond,
			Store: store, AuditLog: quiet, Logger: quiet,
		},
	}
}

func (e *env) start(t *testing.T) *Service {
	t.Helper()
	s, err := New(e.cfg)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

func (e *env) do(t *testing.T, h http.Handler, method, path, key, body string) *http.Response {
	t.Helper()
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+e.token)
	if key != "" {
		r.Header.Set(idempotency.HeaderKey, key)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

func TestOrderRunsOnceAndIsReplayed(t *testing.T) {
	e := newEnv(t)
	s := e.start(t)
	first := e.do(t, s, http.MethodPost, "/orders", `"k1"`, `{"write_id":"w1"}`)
	require.Equal(t, http.StatusCreated, first.StatusCode)
	again := e.do(t, s, http.MethodPost, "/orders", `"k1"`, `{"write_id":"w1"}`)
	assert.Equal(t, http.StatusCreated, again.StatusCode)
	assert.Equal(t, "true", again.Header.Get(idempotency.HeaderReplayed))
	b1, _ := io.ReadAll(first.Body)
	b2, _ := io.ReadAll(again.Body)
	assert.Equal(t, string(b1), string(b2))
	assert.Equal(t, 1, e.ds.Executions("w1"))

	other := e.do(t, s, http.MethodPost, "/orders", `"k1"`, `{"write_id":"w2"}`)
	assert.Equal(t, http.StatusUnprocessableEntity, other.StatusCode, "same key, other payload")
	assert.Equal(t, 0, e.ds.Executions("w2"))
}

func TestRestartDuringIdPOutageVerifiesFromCacheFile(t *testing.T) {
	e := newEnv(t)
	s := e.start(t)
	require.Equal(t, http.StatusOK, e.do(t, s, http.MethodGet, "/items/1", "", "").StatusCode)
	s.Close()

	e.idp.SetDown(true)
	s2 := e.start(t)
	resp := e.do(t, s2, http.MethodGet, "/items/1", "", "")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	// Once the restarted verifier has noticed the outage, requests say so.
	require.Eventually(t, func() bool { return s2.Verifier.Status().Fallback }, 5*time.Second, 20*time.Millisecond)
	resp = e.do(t, s2, http.MethodGet, "/items/2", "", "")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.NotEmpty(t, resp.Header.Get(degrade.HeaderDegraded))

	r := httptest.NewRequest(http.MethodGet, "/items/1", nil)
	r.Header.Set("Authorization", "Bearer not-a-token")
	w := httptest.NewRecorder()
	s2.ServeHTTP(w, r)
	assert.Equal(t, http.StatusUnauthorized, w.Code, "fallback never widens access")
}

func TestDownstreamOutageServesStaleAndQueuesWrites(t *testing.T) {
	e := newEnv(t)
	s := e.start(t)
	require.Equal(t, http.StatusOK, e.do(t, s, http.MethodGet, "/items/7", "", "").StatusCode)

	e.ds.SetMode(downstream.Fail5xx)
	// Reads are answered from the last good response.
	stale := e.do(t, s, http.MethodGet, "/items/7", "", "")
	assert.Equal(t, http.StatusOK, stale.StatusCode)
	assert.NotEmpty(t, stale.Header.Get(degrade.HeaderDegraded))

	// Writes fail until the breaker opens and the service degrades; then
	// they are queued.
	require.Eventually(t, func() bool {
		e.do(t, s, http.MethodGet, "/items/8", "", "")
		return s.Controller.Mode() == degrade.Degraded
	}, 5*time.Second, 10*time.Millisecond)
	hits := e.ds.Hits()
	r := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(`{"write_id":"x"}`))
	r.Header.Set("Authorization", "Bearer forged")
	r.Header.Set(idempotency.HeaderKey, `"x"`)
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	assert.Equal(t, http.StatusUnauthorized, w.Code, "no queueing without a valid token")
	queued := e.do(t, s, http.MethodPost, "/orders", `"q1"`, `{"write_id":"q1"}`)
	require.Equal(t, http.StatusAccepted, queued.StatusCode)
	assert.Equal(t, hits, e.ds.Hits(), "a queued write does not reach the downstream")
	assert.Equal(t, http.StatusAccepted, e.do(t, s, http.MethodPost, "/orders", `"q1"`, `{"write_id":"q1"}`).StatusCode)

	// Recovery: the breaker closes, the mode returns to normal, the queue is
	// replayed, and the client's poll gets the final answer.
	e.ds.SetMode(downstream.Healthy)
	require.Eventually(t, func() bool {
		e.do(t, s, http.MethodGet, "/items/9", "", "")
		return s.Controller.Mode() == degrade.Normal
	}, 5*time.Second, 20*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := s.Drain(ctx)
	require.NoError(t, err)
	final := e.do(t, s, http.MethodPost, "/orders", `"q1"`, `{"write_id":"q1"}`)
	assert.Equal(t, http.StatusCreated, final.StatusCode)
	assert.Equal(t, 1, e.ds.Executions("q1"))
}

func TestDownstreamKeyIsStablePerCallerAndKey(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, "/orders", nil)
	assert.Empty(t, downstreamKey(r), "no caller key, no derived key")
	r.Header.Set(idempotency.HeaderKey, `"a"`)
	k1 := downstreamKey(r)
	assert.Len(t, k1, 32)
	assert.Equal(t, k1, downstreamKey(r.Clone(context.Background())))
	r.Header.Set(idempotency.HeaderKey, `"b"`)
	assert.NotEqual(t, k1, downstreamKey(r))
}

func TestScopesAreEnforced(t *testing.T) {
	e := newEnv(t)
	s := e.start(t)
	e.token = e.idp.Issue(jwt.MapClaims{"sub": "reader", "scope": "read"})
	assert.Equal(t, http.StatusOK, e.do(t, s, http.MethodGet, "/items/1", "", "").StatusCode)
	resp := e.do(t, s, http.MethodPost, "/orders", `"r1"`, `{"write_id":"r1"}`)
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
	assert.Equal(t, 0, e.ds.Executions("r1"))
}

// revocationList is an IdP revocation list that can be taken down.
type revocationList struct {
	mu   sync.Mutex
	down bool
	sub  map[string]string
}

func (l *revocationList) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"jti": []string{}, "sub": l.sub})
}

func TestSubjectRevokedDuringOutageIsRefusedAndReconciled(t *testing.T) {
	e := newEnv(t)
	list := &revocationList{sub: map[string]string{}}
	lsrv := httptest.NewServer(list)
	t.Cleanup(lsrv.Close)
	var mu sync.Mutex
	var reconciled []authfallback.ReconcileEvent
	e.cfg.RevocationURL = lsrv.URL
	e.cfg.Hooks.OnReconcile = func(ev authfallback.ReconcileEvent) {
		mu.Lock()
		reconciled = append(reconciled, ev)
		mu.Unlock()
	}
	e.cfg.TrialEvery = time.Hour // no trial runs the queued write before the test says
	s := e.start(t)
	require.Equal(t, http.StatusOK, e.do(t, s, http.MethodGet, "/items/1", "", "").StatusCode)

	// The IdP goes down, and revokes alice while it is down: no one can know.
	e.idp.SetDown(true)
	list.mu.Lock()
	list.down = true
	list.sub["alice"] = time.Now().UTC().Format(time.RFC3339Nano)
	list.mu.Unlock()
	require.Eventually(t, func() bool { return s.Verifier.Status().Fallback }, 5*time.Second, 20*time.Millisecond)
	during := e.do(t, s, http.MethodGet, "/items/2", "", "")
	require.Equal(t, http.StatusOK, during.StatusCode)
	require.NotEmpty(t, during.Header.Get(degrade.HeaderDegraded))
	// A write of alice's is queued meanwhile (the service is degraded, its
	// downstream failing: the replayer's first trial fails).
	e.ds.SetMode(downstream.Fail5xx)
	s.Controller.Force(degrade.Degraded, "test")
	queued := e.do(t, s, http.MethodPost, "/orders", `"rq"`, `{"write_id":"rq"}`)
	require.Equal(t, http.StatusAccepted, queued.StatusCode)
	// The replayer's first trial of it fails against the failing downstream;
	// let its retries (three attempts, a few hundred ms) end before the downstream returns,
	// or a retry would land on the healthy downstream: a trial authorized
	// before the revocation was known may run, as it would in production.
	time.Sleep(time.Second)

	// The IdP is back: the revocation is enforced, and reconciliation
	// reports the token accepted during the outage.
	e.idp.SetDown(false)
	list.mu.Lock()
	list.down = false
	list.mu.Unlock()
	require.Eventually(t, func() bool {
		return e.do(t, s, http.MethodGet, "/items/3", "", "").StatusCode == http.StatusUnauthorized
	}, 5*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(reconciled) > 0
	}, 5*time.Second, 20*time.Millisecond)
	mu.Lock()
	assert.Equal(t, "alice", reconciled[0].Subject)
	assert.GreaterOrEqual(t, reconciled[0].Accepted, 1)
	mu.Unlock()

	// A trial authorized before the revocation was known may still be
	// retrying against the failing downstream (the machine may be slow):
	// Trial takes the replayer's lock, so it waits that one out, then
	// authorizes the write again, now with the revocation known.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = s.Replayer.Trial(ctx)

	// The queued write of the revoked subject is refused at replay: it
	// never reaches the downstream.
	e.ds.SetMode(downstream.Healthy)
	s.Controller.Release()
	_, err := s.Drain(ctx)
	require.NoError(t, err)
	assert.Equal(t, 0, e.ds.Executions("rq"), "a revoked subject's queued write does not run")
}

func TestOfflineTokensWorkOnlyInFallback(t *testing.T) {
	e := newEnv(t)
	_, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	e.cfg.OfflineKey = key
	// No background refresh: with a short one, a refresh delayed on a
	// loaded machine leaves the keys unconfirmed, which counts as fallback
	// mode and accepts the offline token; the outage is entered by hand.
	e.cfg.KeyRefresh = time.Hour
	s := e.start(t)

	exchange := func() (string, int) {
		resp := e.do(t, s, http.MethodPost, OfflineTokenPath, "", "")
		var body struct {
			AccessToken string `json:"access_token"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return body.AccessToken, resp.StatusCode
	}
	offline, status := exchange()
	require.Equal(t, http.StatusOK, status)
	require.NotEmpty(t, offline)
	primary := e.token
	e.token = offline
	assert.Equal(t, http.StatusUnauthorized, e.do(t, s, http.MethodGet, "/items/1", "", "").StatusCode,
		"an offline token is refused while the IdP is reachable")

	e.idp.SetDown(true)
	require.Error(t, s.Verifier.Refresh(context.Background()))
	require.True(t, s.Verifier.Status().Fallback)
	resp := e.do(t, s, http.MethodGet, "/items/1", "", "")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, authfallback.ReasonOfflineToken, resp.Header.Get(degrade.HeaderDegraded))

	// The gate lets the exchange through in degraded mode, and an offline
	// token cannot be exchanged for another.
	e.token = primary
	s.Controller.Force(degrade.Degraded, "test")
	_, status = exchange()
	assert.Equal(t, http.StatusOK, status, "not queued like a write")
	s.Controller.Release()
	e.token = offline
	_, status = exchange()
	assert.Equal(t, http.StatusForbidden, status)
}
