package idempotency_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/internal/caller"
)

// asCaller is authentication's part: the verified caller in the context.
func asCaller(next http.Handler, iss, sub string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(caller.NewContext(r.Context(), caller.New(iss, sub, nil, "", nil))))
	})
}

func TestScopeIsTheVerifiedCaller(t *testing.T) {
	app := &orders{}
	x := idempotency.New(idempotency.Config{Store: newStore(t)})
	alice := asCaller(x.Handler(app), "https://idp", "alice")
	first := post(alice, "k", "x", "Authorization", "Bearer token-1")
	require.Equal(t, http.StatusCreated, first.Code)
	again := post(alice, "k", "x", "Authorization", "Bearer token-2-refreshed")
	assert.Equal(t, http.StatusCreated, again.Code)
	assert.Equal(t, "true", again.Header().Get(idempotency.HeaderReplayed), "same subject, new token: a replay")
	assert.Equal(t, int64(1), app.runs.Load())

	bob := asCaller(x.Handler(app), "https://idp", "bob")
	w := post(bob, "k", "x", "Authorization", "Bearer token-1")
	assert.Empty(t, w.Header().Get(idempotency.HeaderReplayed), "another subject, even with alice's token: its own record")
	assert.Equal(t, int64(2), app.runs.Load())
	other := asCaller(x.Handler(app), "https://other-idp", "alice")
	w = post(other, "k", "x", "Authorization", "Bearer token-1")
	assert.Empty(t, w.Header().Get(idempotency.HeaderReplayed), "the same subject of another issuer: its own record")
	assert.Equal(t, int64(3), app.runs.Load())

	// No verified caller: the credentials, hashed, are the scope.
	anon := x.Handler(app)
	post(anon, "k", "x", "Authorization", "Bearer token-1")
	w = post(anon, "k", "x", "Authorization", "Bearer token-1")
	assert.Equal(t, "true", w.Header().Get(idempotency.HeaderReplayed))
	w = post(anon, "k", "x", "Authorization", "Bearer token-2")
	assert.Empty(t, w.Header().Get(idempotency.HeaderReplayed), "credential scope: a new token, a new scope")
	assert.Equal(t, int64(5), app.runs.Load())

	// Config.Scope, when set, wins over the caller.
	scoped := idempotency.New(idempotency.Config{Store: newStore(t), Scope: func(*http.Request) string { return "tenant-1" }})
	post(asCaller(scoped.Handler(app), "https://idp", "alice"), "k", "x")
	w = post(asCaller(scoped.Handler(app), "https://idp", "bob"), "k", "x")
	assert.Equal(t, "true", w.Header().Get(idempotency.HeaderReplayed), "one tenant, one scope")
}

// announcingBody claims a large Content-Length and sends little.
func announcing(body string, length int64) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(body))
	r.ContentLength = length
	r.Header.Set("Idempotency-Key", "k")
	return r
}

func TestBodyMemoryGrowsAsBytesArrive(t *testing.T) {
	x := idempotency.New(idempotency.Config{Store: newStore(t)})
	h := x.Handler(&orders{})
	serve := func(r *http.Request) (*httptest.ResponseRecorder, uint64) {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		runtime.ReadMemStats(&after)
		return w, after.TotalAlloc - before.TotalAlloc
	}
	w, alloc := serve(announcing("ab", 1<<20))
	assertProblem(t, w, http.StatusBadRequest, idempotency.ProblemBodyUnreadable)
	assert.Less(t, alloc, uint64(64<<10), "a 1 MiB announcement that sent 2 bytes costs little: %d bytes", alloc)

	w, alloc = serve(announcing("ab", 1<<20+1))
	assertProblem(t, w, http.StatusRequestEntityTooLarge, idempotency.ProblemBodyTooLarge)
	assert.Less(t, alloc, uint64(64<<10))

	big := strings.Repeat("x", 1<<20+1)
	w, _ = serve(announcing(big, -1))
	assertProblem(t, w, http.StatusRequestEntityTooLarge, idempotency.ProblemBodyTooLarge) // chunked, over the bound
	r := announcing(strings.Repeat("x", 100), -1)
	r.Body = http.MaxBytesReader(httptest.NewRecorder(), r.Body, 10)
	w, _ = serve(r)
	assertProblem(t, w, http.StatusRequestEntityTooLarge, idempotency.ProblemBodyTooLarge) // a server's MaxBytesReader is a 413 too

	// A body that arrives whole is read whole, in pieces of any size.
	app := &echo{}
	ok := httptest.NewRecorder()
	body := strings.Repeat("0123456789", 10000)
	x.Handler(app).ServeHTTP(ok, announcing(body, int64(len(body))))
	require.Equal(t, http.StatusOK, ok.Code)
	assert.Equal(t, body, app.got)
	ok = httptest.NewRecorder()
	req := announcing(body, -1)
	req.Body = io.NopCloser(&trickle{s: body + "!"})
	req.Header.Set("Idempotency-Key", "k2")
	x.Handler(app).ServeHTTP(ok, req)
	assert.Equal(t, body+"!", app.got)
}

type echo struct{ got string }

func (e *echo) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	e.got = string(b)
}

// trickle returns at most 7 bytes per Read.
type trickle struct{ s string }

func (t *trickle) Read(p []byte) (int, error) {
	if t.s == "" {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 7)], t.s)
	t.s = t.s[n:]
	return n, nil
}

func TestWriteProblemAndOutcomes(t *testing.T) {
	var (
		mu       sync.Mutex
		outcomes []idempotency.OutcomeEvent
		problems []string
	)
	x := idempotency.New(idempotency.Config{
		Store: newStore(t),
		OnOutcome: func(ev idempotency.OutcomeEvent) {
			mu.Lock()
			outcomes = append(outcomes, ev)
			mu.Unlock()
		},
		WriteProblem: func(w http.ResponseWriter, r *http.Request, p idempotency.Problem) {
			problems = append(problems, p.Type)
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(p.Status)
			_, _ = io.WriteString(w, "custom: "+p.Title)
		},
	})
	h := x.Handler(&orders{})
	post(h, "k", "x")
	post(h, "k", "x")
	w := post(h, "k", "other")
	assert.Equal(t, http.StatusUnprocessableEntity, w.Code)
	assert.Equal(t, "custom: Idempotency-Key reused", w.Body.String(), "the service's own error writer")
	w = post(h, `"unterminated`, "x")
	assert.Equal(t, http.StatusBadRequest, w.Code)
	r := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader("q"))
	r.Header.Set("Idempotency-Key", "q")
	r = r.WithContext(caller.NewContext(r.Context(), caller.New("i", "s", nil, "", nil)))
	x.Enqueue(httptest.NewRecorder(), r)

	assert.Equal(t, []string{idempotency.ProblemKeyReused, idempotency.ProblemKeyInvalid}, problems)
	mu.Lock()
	defer mu.Unlock()
	var kinds []string
	for _, ev := range outcomes {
		kinds = append(kinds, ev.Outcome)
		assert.Equal(t, http.MethodPost, ev.Method)
		assert.Equal(t, "/orders", ev.Route)
	}
	assert.Equal(t, []string{idempotency.OutcomeFirst, idempotency.OutcomeReplay, idempotency.OutcomeMismatch, idempotency.OutcomeQueued}, kinds)
	assert.Equal(t, http.StatusCreated, outcomes[0].Status)
	assert.Equal(t, http.StatusAccepted, outcomes[3].Status)
}
