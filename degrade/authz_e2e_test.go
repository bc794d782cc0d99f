package degrade_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
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
	"github.com/holdfast-go/holdfast/breaker"
	"github.com/holdfast-go/holdfast/degrade"
)

// authzService is the documented server wiring over real HTTP:
// authfallback -> degrade.Stale -> ServeMux -> breaker (route) -> handler
// that checks the scope itself.
type authzService struct {
	idp  *authtest.Server
	v    *authfallback.Verifier
	srv  *httptest.Server
	fail atomic.Bool // the handlers answer 500 (their downstream is down)
}

func newAuthzService(t *testing.T, scope func(*http.Request) string) *authzService {
	t.Helper()
	s := &authzService{idp: authtest.New()}
	t.Cleanup(s.idp.Close)
	v, err := authfallback.New(authfallback.Config{
		Issuer:   s.idp.Issuer(),
		Audience: []string{s.idp.Audience()},
		JWKSURLs: []string{s.idp.JWKSURL()},
		Policy:   authfallback.Policy{AllowedScopes: []string{"read"}},
		AuditLog: slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = v.Close() })
	s.v = v
	brk := breaker.New(breaker.Config{MinCallers: 1, Delay: time.Hour, DisableJitter: true})
	route := func(need, body string) http.Handler {
		return brk.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			res, _ := authfallback.FromContext(r.Context())
			if res == nil || !res.HasScope(need) {
				http.Error(w, "missing scope "+need, http.StatusForbidden)
				return
			}
			if s.fail.Load() {
				http.Error(w, "downstream down", http.StatusInternalServerError)
				return
			}
			w.Header().Set("Cache-Control", "private, max-age=0")
			_, _ = io.WriteString(w, body+" for "+res.Subject)
		}))
	}
	mux := http.NewServeMux()
	mux.Handle("GET /report", route("admin", "admin report"))
	mux.Handle("GET /items", route("read", "items"))
	stale := &degrade.Stale{Scope: scope}
	s.srv = httptest.NewServer(v.Handler(stale.Handler(mux)))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *authzService) get(t *testing.T, path, tok string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.srv.URL+path, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := s.srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b), resp.Header.Get(degrade.HeaderDegraded)
}

// openRoute makes path fail until its breaker opens.
func (s *authzService) openRoute(t *testing.T, path, tok string) {
	t.Helper()
	s.fail.Store(true)
	for range 5 {
		s.get(t, path, tok)
	}
}

// Attack 1 of issue 14: Stale.Scope set to the subject (as its doc used to
// suggest), the route breaker open; a down-scoped token of the same subject
// must get the breaker's 503, never the response produced for the admin
// token.
func TestStaleDownScopedTokenNeverGetsAdminResponse(t *testing.T) {
	s := newAuthzService(t, func(r *http.Request) string {
		res, _ := authfallback.FromContext(r.Context())
		if res == nil {
			return ""
		}
		return res.Subject
	})
	admin := s.idp.Issue(jwt.MapClaims{"sub": "alice", "scope": "read admin"})
	narrow := s.idp.Issue(jwt.MapClaims{"sub": "alice", "scope": "read"})

	code, body, _ := s.get(t, "/report", admin)
	require.Equal(t, 200, code)
	require.Equal(t, "admin report for alice", body)
	code, _, _ = s.get(t, "/report", narrow)
	require.Equal(t, 403, code, "the handler refuses the narrow token while it runs")

	s.openRoute(t, "/report", admin)
	code, body, deg := s.get(t, "/report", admin)
	require.Equal(t, 200, code, "the admin token itself still gets its stale copy")
	require.Equal(t, "stale-if-error", deg)

	code, body, _ = s.get(t, "/report", narrow)
	assert.Contains(t, []int{403, 503}, code, "the handler's 403 or the breaker's 503, not the admin's 200")
	assert.NotContains(t, body, "admin report")
}

// Attack 2 of issue 14: default scope; the admin response is stored before
// an IdP outage; in fallback the same token is degraded and loses its admin
// scope. It must not be served the admin response, and every degraded
// reason stays listed in Holdfast-Degraded.
func TestStaleDegradedTokenNeverGetsPreOutageResponse(t *testing.T) {
	s := newAuthzService(t, nil)
	admin := s.idp.Issue(jwt.MapClaims{"sub": "alice", "scope": "read admin"})

	code, body, _ := s.get(t, "/report", admin)
	require.Equal(t, 200, code)
	require.Equal(t, "admin report for alice", body)

	s.openRoute(t, "/report", admin) // other trouble opens the route before the IdP outage
	s.fail.Store(false)

	s.idp.SetDown(true)
	require.Error(t, s.v.Refresh(context.Background()), "the IdP is down: fallback mode")
	code, body, deg := s.get(t, "/items", admin)
	require.Equal(t, 200, code, "reads still work in fallback")
	require.Equal(t, authfallback.ReasonJWKSUnreachable, deg)
	require.Equal(t, "items for alice", body)

	code, body, deg = s.get(t, "/report", admin)
	assert.Contains(t, []int{403, 503}, code, "the degraded token must not get the admin response stored before the outage")
	assert.NotContains(t, body, "admin report")
	assert.Equal(t, authfallback.ReasonJWKSUnreachable, deg)

	// A stale answer produced for the degraded access itself is served, and
	// says both reasons.
	s.fail.Store(true)
	code, body, deg = s.get(t, "/items", admin)
	require.Equal(t, 200, code)
	assert.Equal(t, "items for alice", body)
	assert.Equal(t, authfallback.ReasonJWKSUnreachable+", stale-if-error", deg)
}

// Holdfast-Degraded lists every reason that applies, in the order the
// layers added them: the gate's mode, authfallback's reason, stale-if-error.
func TestDegradedHeaderListsEveryReason(t *testing.T) {
	s := newAuthzService(t, nil)
	c := degrade.New(degrade.Config{AuditLog: slog.New(slog.DiscardHandler)})
	defer c.Close()
	gated := httptest.NewServer(c.Handler(s.srv.Config.Handler))
	defer gated.Close()
	tok := s.idp.Issue(jwt.MapClaims{"sub": "alice", "scope": "read"})
	get := func() (int, string) {
		req, _ := http.NewRequest(http.MethodGet, gated.URL+"/items", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := gated.Client().Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get(degrade.HeaderDegraded)
	}
	s.idp.SetDown(true)
	require.Error(t, s.v.Refresh(context.Background()))
	code, _ := get() // stored for the degraded access
	require.Equal(t, 200, code)
	c.Force(degrade.ReadOnly, "IdP incident")
	s.fail.Store(true)
	code, deg := get()
	require.Equal(t, 200, code)
	assert.Equal(t, "read-only, "+authfallback.ReasonJWKSUnreachable+", stale-if-error", deg)
}

// Issue 14 point 2: a provider's 429 gets the stale answer on the client
// side, unless Stale.IsFailure says otherwise.
func TestStaleTransportTreats429AsFailure(t *testing.T) {
	var throttle atomic.Bool
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if throttle.Load() {
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Header().Set("Cache-Control", "max-age=0")
		_, _ = io.WriteString(w, "rates")
	}))
	defer up.Close()
	get := func(s *degrade.Stale) (int, string) {
		resp, err := (&http.Client{Transport: s.Transport(up.Client().Transport)}).Get(up.URL + "/rates")
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	s := &degrade.Stale{}
	notThrottle := &degrade.Stale{IsFailure: func(status int) bool { return status >= 500 }}
	for _, st := range []*degrade.Stale{s, notThrottle} {
		code, _ := get(st)
		require.Equal(t, 200, code)
	}
	throttle.Store(true)
	code, body := get(s)
	assert.Equal(t, 200, code, "429 is replaced by the stored response")
	assert.Equal(t, "rates", body)
	code, _ = get(notThrottle)
	assert.Equal(t, 429, code, "configurable: 429 passes through")
}

// Shedding after authentication (Config.StaleInside): a shed read gets the
// response stored for its own access, never another's, and never reaches
// the handler.
func TestShedReadsAnsweredPerVerifiedCaller(t *testing.T) {
	idp := authtest.New()
	defer idp.Close()
	v, err := authfallback.New(authfallback.Config{
		Issuer: idp.Issuer(), Audience: []string{idp.Audience()}, JWKSURLs: []string{idp.JWKSURL()},
		AuditLog: slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	defer v.Close()
	stale := &degrade.Stale{}
	c := degrade.New(degrade.Config{MaxConcurrent: 4, Stale: stale, StaleInside: true, AuditLog: slog.New(slog.DiscardHandler)})
	defer c.Close()
	release := make(chan struct{})
	entered := make(chan struct{}, 8)
	var calls atomic.Int32
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
			return
		}
		res, _ := authfallback.FromContext(r.Context())
		w.Header().Set("Cache-Control", "private, max-age=0")
		_, _ = io.WriteString(w, "report for "+res.Subject+" with "+strings.Join(res.Scopes, " "))
	})
	srv := httptest.NewServer(c.Handler(v.Handler(stale.Handler(app))))
	defer srv.Close()
	get := func(path, tok string) (int, string, string) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header.Get(degrade.HeaderDegraded)
	}
	admin := idp.Issue(jwt.MapClaims{"sub": "alice", "scope": "read admin"})
	narrow := idp.Issue(jwt.MapClaims{"sub": "alice", "scope": "read"})
	code, body, _ := get("/report", admin)
	require.Equal(t, 200, code)
	require.Equal(t, "report for alice with read admin", body)

	var wg sync.WaitGroup
	for range 3 { // 3 of 4: reads are shed
		wg.Add(1)
		go func() { defer wg.Done(); get("/slow", admin) }()
		<-entered
	}
	before := calls.Load()
	code, body, deg := get("/report", admin)
	assert.Equal(t, 200, code, "the admin's own stored response")
	assert.Equal(t, "report for alice with read admin", body)
	assert.Equal(t, "overloaded, stale-if-error", deg)
	code, body, _ = get("/report", narrow)
	assert.Equal(t, 503, code, "a narrower token of the same subject gets the 503")
	assert.NotContains(t, body, "admin")
	code, _, _ = get("/report", "not-a-token")
	assert.Equal(t, 401, code, "authentication still runs first")
	assert.Equal(t, before, calls.Load(), "shed reads never reach the handler")
	close(release)
	wg.Wait()
}
