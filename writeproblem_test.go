package holdfast_test

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
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
)

// userProblems is a service's own error format: one function, of the type
// every package's WriteProblem field has, that renders holdfast's
// refusals as text/plain with the problem type in a header.
type userProblems struct {
	mu   sync.Mutex
	seen []authfallback.Problem
}

func (u *userProblems) write(w http.ResponseWriter, r *http.Request, p authfallback.Problem) {
	u.mu.Lock()
	u.seen = append(u.seen, p)
	u.mu.Unlock()
	if p.RetryAfter > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(int((p.RetryAfter+time.Second-1)/time.Second)))
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Error-Type", p.Type)
	w.WriteHeader(p.Status)
	fmt.Fprintf(w, "my-format: %d %s", p.Status, p.Type)
}

// TestEveryPackageRendersThroughWriteProblem proves that one user
// function, set as WriteProblem, renders each package's refusals.
func TestEveryPackageRendersThroughWriteProblem(t *testing.T) {
	u := &userProblems{}
	type result struct {
		name   string
		rec    *httptest.ResponseRecorder
		status int
		typ    string
	}
	var results []result
	add := func(name string, rec *httptest.ResponseRecorder, status int, typ string) {
		results = append(results, result{name, rec, status, typ})
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })

	// authfallback: 401 for a bad token, 503 while no key set is known.
	idp := authtest.New()
	defer idp.Close()
	v, err := authfallback.New(authfallback.Config{Issuer: idp.Issuer(), Audience: []string{idp.Audience()},
		JWKSURLs: []string{idp.JWKSURL()}, AuditLog: quiet(), WriteProblem: u.write})
	require.NoError(t, err)
	defer v.Close()
	add("authfallback 401", serve(v.Handler(ok), get("/", "Bearer not-a-jwt")), 401, authfallback.ProblemInvalidToken)
	idp.SetDown(true)
	down, err := authfallback.New(authfallback.Config{Issuer: idp.Issuer(), Audience: []string{idp.Audience()},
		JWKSURLs: []string{idp.JWKSURL()}, AuditLog: quiet(), WriteProblem: u.write})
	require.NoError(t, err)
	defer down.Close()
	add("authfallback 503", serve(down.Handler(ok), get("/", "Bearer "+idp.Issue(jwt.MapClaims{"sub": "a"}))),
		503, authfallback.ProblemUnavailable)

	// idempotency: 409 in flight, 422 other payload, 413 too large.
	store := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
	defer store.Close()
	x := idempotency.New(idempotency.Config{Store: store, MaxRequestBytes: 64, WriteProblem: u.write})
	entered, release := make(chan struct{}), make(chan struct{})
	slow := x.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Slow") != "" {
			close(entered)
			<-release
		}
		w.WriteHeader(http.StatusCreated)
	}))
	post := func(key, body string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer caller-1")
		r.Header.Set(idempotency.HeaderKey, key)
		return r
	}
	first := post(`"k1"`, `{"a":1}`)
	first.Header.Set("X-Slow", "1")
	done := make(chan struct{})
	go func() { defer close(done); serve(slow, first) }()
	<-entered
	add("idempotency 409", serve(slow, post(`"k1"`, `{"a":1}`)), 409, idempotency.ProblemKeyInUse)
	close(release)
	<-done
	add("idempotency 422", serve(slow, post(`"k1"`, `{"a":2}`)), 422, idempotency.ProblemKeyReused)
	add("idempotency 413", serve(slow, post(`"k2"`, strings.Repeat("x", 100))), 413, idempotency.ProblemBodyTooLarge)

	// degrade: 503 refused in read-only mode, 503 shed when saturated.
	ctrl := degrade.New(degrade.Config{AuditLog: quiet(), WriteProblem: u.write})
	defer ctrl.Close()
	ctrl.Force(degrade.ReadOnly, "runbook drill")
	add("degrade refuse", serve(ctrl.Handler(ok), httptest.NewRequest(http.MethodPost, "/orders", nil)),
		503, degrade.ProblemServiceReadOnly)
	shedCtrl := degrade.New(degrade.Config{MaxConcurrent: 1, ShedWait: time.Millisecond, AuditLog: quiet(), WriteProblem: u.write})
	defer shedCtrl.Close()
	busy, free := make(chan struct{}), make(chan struct{})
	gated := shedCtrl.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/busy" {
			close(busy)
			<-free
		}
	}))
	done = make(chan struct{})
	go func() { defer close(done); serve(gated, get("/busy", "")) }()
	<-busy
	add("degrade shed", serve(gated, get("/items/1", "")), 503, degrade.ProblemOverloaded)
	close(free)
	<-done

	// breaker: 503 while the route's breaker is open.
	b := breaker.New(breaker.Config{FailureThreshold: 1, MinCallers: 1, Delay: time.Minute, WriteProblem: u.write})
	failing := b.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	require.Equal(t, 500, serve(failing, get("/items/1", "")).Code)
	add("breaker open", serve(failing, get("/items/1", "")), 503, breaker.ProblemCircuitOpen)

	for _, r := range results {
		t.Run(r.name, func(t *testing.T) {
			assert.Equal(t, r.status, r.rec.Code)
			assert.Equal(t, r.typ, r.rec.Header().Get("X-Error-Type"))
			assert.Equal(t, fmt.Sprintf("my-format: %d %s", r.status, r.typ), r.rec.Body.String())
			assert.Equal(t, "text/plain; charset=utf-8", r.rec.Header().Get("Content-Type"), "not holdfast's problem+json")
			if r.status == 503 {
				assert.NotEmpty(t, r.rec.Header().Get("Retry-After"), "the hook got holdfast's Retry-After")
			}
		})
	}
	assert.Len(t, u.seen, len(results))
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func get(path, auth string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, path, nil)
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	return r
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }
