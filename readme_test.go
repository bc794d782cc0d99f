package holdfast_test

// The README's wiring, compiled and run: TestReadmeWiringIsThisFile checks
// that the block between the markers below is, line for line (one tab of
// indentation less), the README's "Wiring" snippet; the other tests start
// it with the IdP down, with and without a cache file, under -race.

import (
	"context"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
	"github.com/holdfast-go/holdfast/breaker"
	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/retry"
)

// wired is what the README's snippet builds, for the tests to drive.
type wired struct {
	handler  http.Handler
	verifier *authfallback.Verifier
	ctrl     *degrade.Controller
	replayer *idempotency.Replayer
	close    func()
}

// wire runs the README's snippet. Its free names are the service's own:
// issuer, jwksURLs and cacheFile (configuration), overrides (an
// OverrideStore), newMux (the service's routes, given the client they call
// providers with) and auditLog.
func wire(issuer string, jwksURLs []string, cacheFile string, overrides degrade.OverrideStore,
	newMux func(*http.Client) *http.ServeMux, auditLog *slog.Logger) wired {
	// README:wiring begin
	// The controller first: the verifier's hooks report to it. No
	// constructor calls a hook before it returns, and the queue is attached
	// once the verifier exists, so there is no nil to race with.
	ctrl := degrade.New(degrade.Config{
		Dependencies: map[string]degrade.Mode{
			"payments": degrade.Degraded,
			"idp":      degrade.Normal, // tracked only: unlisted would mean Degraded
		},
		// An operator's override (read-only, a dependency marked down)
		// reaches every replica: redisstore.NewOverrides or
		// pgstore.NewOverrides; nil keeps it on this replica.
		Overrides: overrides,
		AuditLog:  auditLog,
	})

	verifier, err := authfallback.New(authfallback.Config{
		Issuer:    issuer,
		Audience:  []string{"orders-api"},
		JWKSURLs:  jwksURLs,  // the IdP's, then a mirror's
		CacheFile: cacheFile, // last-known-good keys, loaded at start
		// State: redisstore.NewAuthState(...) shares the keys, grace
		// records and degraded acceptances with the fleet.
		Policy:          authfallback.Policy{AllowedScopes: []string{"orders:read", "orders:write"}},
		AuditLog:        auditLog,
		OnFallbackEnter: func(ev authfallback.FallbackEvent) { ctrl.SetDown("idp", true, ev.Reason) },
		OnFallbackExit:  func(authfallback.FallbackEvent) { ctrl.SetDown("idp", false, "") },
	})
	if err != nil {
		log.Fatal(err) // an invalid Config only: an unreachable IdP is an outage to survive
	}

	// Records are scoped by the verified caller that verifier.Handler puts
	// in the context. A fleet: redisstore.New or pgstore.New.
	store := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
	idem := idempotency.New(idempotency.Config{Store: store})
	// Writes the gate queues while degraded: authenticated, then stored (202).
	ctrl.SetQueue(verifier.Handler(http.HandlerFunc(idem.Enqueue)))

	// Client side, outermost first: the service's calls to its providers.
	hostBreaker := breaker.New(breaker.Config{
		OnStateChange: func(ch breaker.StateChange) {
			if ch.To == breaker.Closed { // a trial call got through
				ctrl.Recovered("payments")
			}
		},
	})
	client := &http.Client{Transport: &idempotency.Transport{ // a key on every POST/PATCH, the same on each attempt
		Base: (&degrade.Stale{}).Transport( // the last good GET response when the retries failed
			&retry.Transport{ // safe retries, full jitter, Retry-After, budget
				Base: hostBreaker.Transport( // per host: open -> fail fast, never retried
					&degrade.ReportTransport{Controller: ctrl, Dependency: "payments"}), // every attempt's outcome
			}),
	}}
	mux := newMux(client)

	// Server side, outermost first.
	stale := &degrade.Stale{}
	routeBreaker := breaker.New(breaker.Config{
		// One breaker per route: the pattern mux will pick.
		Key:    func(r *http.Request) string { _, p := mux.Handler(r); return p },
		Cached: stale.Lookup, // an open route serves its last good response
	})
	inner := idem.Handler( // Idempotency-Key: replay, 409, 422, run once
		stale.Handler( // a failing read gets its last good response
			routeBreaker.Handler(mux))) // a failing route fails fast
	handler := ctrl.Handler( // mode + tier: pass, queue (202) or refuse (503)
		verifier.Handler(inner)) // Bearer token -> verified caller, degraded flag

	// Queued writes run through inner (no gate, no token: as the caller
	// recorded with them) once the mode is Normal again, and one at a time
	// as trials while it is not.
	replayer := idempotency.NewReplayer(idempotency.ReplayerConfig{
		Idempotency: idem,
		Handler:     inner,
		Healthy:     func() bool { return ctrl.Mode() == degrade.Normal },
	})
	// README:wiring end
	return wired{handler: handler, verifier: verifier, ctrl: ctrl, replayer: replayer, close: func() {
		replayer.Close()
		_ = verifier.Close()
		ctrl.Close()
		_ = store.Close()
	}}
}

func TestReadmeWiringIsThisFile(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	src, err := os.ReadFile("readme_test.go")
	require.NoError(t, err)
	block := readmeBlock(t, string(readme), "## Wiring")
	code := between(t, string(src), "\t// README:wiring begin\n", "\t// README:wiring end\n")
	var lines []string
	for _, l := range strings.SplitAfter(code, "\n") {
		lines = append(lines, strings.TrimPrefix(l, "\t"))
	}
	assert.Equal(t, strings.Join(lines, ""), block,
		"README.md's Wiring snippet and wire in readme_test.go must be the same code")
}

// readmeBlock returns the first ```go block after heading.
func readmeBlock(t *testing.T, readme, heading string) string {
	t.Helper()
	i := strings.Index(readme, "\n"+heading+"\n")
	require.GreaterOrEqual(t, i, 0, "README.md has no %q", heading)
	return between(t, readme[i:], "```go\n", "```\n")
}

func between(t *testing.T, s, begin, end string) string {
	t.Helper()
	i := strings.Index(s, begin)
	require.GreaterOrEqual(t, i, 0, "no %q", begin)
	s = s[i+len(begin):]
	j := strings.Index(s, end)
	require.GreaterOrEqual(t, j, 0, "no %q", end)
	return s[:j]
}

// testMux is the service's own code: a read that calls the provider, and
// a write.
func testMux(provider string) func(*http.Client) *http.ServeMux {
	return func(client *http.Client) *http.ServeMux {
		mux := http.NewServeMux()
		mux.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
			req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, provider+"/orders/"+r.PathValue("id"), nil)
			resp, err := client.Do(req)
			if err != nil {
				http.Error(w, "provider failed", http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			if h := resp.Header.Get(degrade.HeaderDegraded); h != "" {
				w.Header().Set(degrade.HeaderDegraded, h)
			}
			w.WriteHeader(resp.StatusCode)
			_, _ = io.Copy(w, resp.Body)
		})
		mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusCreated)
			_, _ = io.WriteString(w, `{"id":"1"}`)
		})
		return mux
	}
}

type readmeEnv struct {
	idp      *authtest.Server
	provider *httptest.Server
	failing  atomic.Bool
	cache    string
	audit    *slog.Logger
}

func newReadmeEnv(t *testing.T) *readmeEnv {
	e := &readmeEnv{idp: authtest.NewWithConfig(authtest.Config{Audience: "orders-api"}), audit: slog.New(slog.DiscardHandler)}
	t.Cleanup(e.idp.Close)
	e.provider = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e.failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Cache-Control", "max-age=0, stale-if-error=600")
		_, _ = io.WriteString(w, `{"id":"1"}`)
	}))
	t.Cleanup(e.provider.Close)
	e.cache = filepath.Join(t.TempDir(), "jwks.json")
	return e
}

func (e *readmeEnv) start(t *testing.T, overrides degrade.OverrideStore) wired {
	w := wire(e.idp.Issuer(), []string{e.idp.JWKSURL()}, e.cache, overrides, testMux(e.provider.URL), e.audit)
	t.Cleanup(w.close)
	return w
}

func (e *readmeEnv) call(w wired, method, path, key string) *httptest.ResponseRecorder {
	tok := e.idp.Issue(jwt.MapClaims{"sub": "readme", "scope": "orders:read orders:write"})
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(`{"n":1}`)
	}
	r := httptest.NewRequest(method, path, body)
	r.Header.Set("Authorization", "Bearer "+tok)
	if key != "" {
		r.Header.Set(idempotency.HeaderKey, key)
	}
	rec := httptest.NewRecorder()
	w.handler.ServeHTTP(rec, r)
	return rec
}

func TestReadmeWiringIdPDownWithoutCacheFile(t *testing.T) {
	e := newReadmeEnv(t)
	e.idp.SetDown(true)
	w := e.start(t, nil)
	// No keys yet: 503, never a crash; the fallback hook reaches the
	// controller from the refresh goroutine.
	assert.Equal(t, http.StatusServiceUnavailable, e.call(w, http.MethodGet, "/orders/1", "").Code)
	require.Eventually(t, func() bool { return idpDown(w.ctrl) }, 5*time.Second, 10*time.Millisecond)
	// The IdP returns: verified, served.
	e.idp.SetDown(false)
	require.NoError(t, w.verifier.Refresh(context.Background()))
	rec := e.call(w, http.MethodGet, "/orders/1", "")
	assert.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	assert.False(t, idpDown(w.ctrl))
}

func TestReadmeWiringIdPDownWithCacheFile(t *testing.T) {
	e := newReadmeEnv(t)
	first := e.start(t, nil) // writes the cache file
	require.Equal(t, http.StatusOK, e.call(first, http.MethodGet, "/orders/1", "").Code)
	first.close()
	_, err := os.Stat(e.cache)
	require.NoError(t, err)

	e.idp.SetDown(true) // restart in the outage
	w := e.start(t, nil)
	require.Eventually(t, func() bool { return idpDown(w.ctrl) }, 5*time.Second, 10*time.Millisecond)
	rec := e.call(w, http.MethodGet, "/orders/1", "")
	assert.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	assert.NotEmpty(t, rec.Header().Get(degrade.HeaderDegraded), "served degraded")
	// A keyed write and its replay.
	assert.Equal(t, http.StatusCreated, e.call(w, http.MethodPost, "/orders", `"k1"`).Code)
	assert.Equal(t, http.StatusCreated, e.call(w, http.MethodPost, "/orders", `"k1"`).Code)
}

func TestReadmeWiringQueuesAndReplays(t *testing.T) {
	e := newReadmeEnv(t)
	overrides := degrade.NewMemoryOverrides() // stands in for the fleet's store
	w := e.start(t, overrides)
	other := e.start(t, overrides) // another replica
	require.Equal(t, http.StatusOK, e.call(w, http.MethodGet, "/orders/1", "").Code)

	// The provider fails: the read is answered stale.
	e.failing.Store(true)
	rec := e.call(w, http.MethodGet, "/orders/1", "")
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.NotEmpty(t, rec.Header().Get(degrade.HeaderDegraded))
	e.failing.Store(false)

	// An operator forces degraded on one replica: the fleet follows; a
	// write is queued, then replayed once released.
	w.ctrl.Force(degrade.Degraded, "maintenance")
	require.Eventually(t, func() bool { return other.ctrl.Mode() == degrade.Degraded }, 10*time.Second, 20*time.Millisecond)
	assert.Equal(t, http.StatusAccepted, e.call(w, http.MethodPost, "/orders", `"q1"`).Code)
	w.ctrl.Release()
	require.Equal(t, degrade.Normal, w.ctrl.Mode())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.Eventually(t, func() bool {
		_, _ = w.replayer.Drain(ctx)
		rec := e.call(w, http.MethodPost, "/orders", `"q1"`)
		return rec.Code == http.StatusCreated
	}, 5*time.Second, 20*time.Millisecond, "the queued write was replayed and its response is stored")
}

func idpDown(c *degrade.Controller) bool {
	return c.Status().Dependencies["idp"].Down
}

// TestNoHookInsideNew: with the IdP down and no cache file, New's first
// fetch fails, and its hooks run on the refresh goroutine, never within
// New: New returns while a hook blocks. (They may run before the caller has
// stored New's result, so a hook uses only what was built before New, as
// the README's wiring does with the controller.)
func TestNoHookInsideNew(t *testing.T) {
	idp := authtest.New()
	defer idp.Close()
	idp.SetDown(true)
	release := make(chan struct{})
	var called atomic.Bool
	hook := func() {
		called.Store(true)
		<-release
	}
	done := make(chan *authfallback.Verifier, 1)
	go func() {
		v, err := authfallback.New(authfallback.Config{Issuer: idp.Issuer(), Audience: []string{idp.Audience()},
			JWKSURLs: []string{idp.JWKSURL()}, AuditLog: quiet(),
			OnFallbackEnter: func(authfallback.FallbackEvent) { hook() },
			OnRefreshError:  func(authfallback.RefreshErrorEvent) { hook() },
		})
		assert.NoError(t, err)
		done <- v
	}()
	var v *authfallback.Verifier
	select {
	case v = <-done:
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("New did not return while a hook was blocked: it calls hooks itself")
	}
	require.Eventually(t, called.Load, 5*time.Second, 5*time.Millisecond)
	close(release)
	_ = v.Close()
}
