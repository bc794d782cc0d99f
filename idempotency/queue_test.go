package idempotency_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/internal/caller"
)

// queueServer is a service whose gate sends writes, once authenticated, to
// Enqueue while degraded.
type queueServer struct {
	x        *idempotency.Idempotency
	degraded atomic.Bool
	app      http.Handler // what Replay runs: the normal chain without authentication
	srv      *httptest.Server
}

func newQueueServer(t *testing.T, store idempotency.Store, app http.Handler) *queueServer {
	q := &queueServer{x: idempotency.New(idempotency.Config{Store: store})}
	q.app = q.x.Handler(app)
	live := requireAuth(q.app)
	queue := requireAuth(http.HandlerFunc(q.x.Enqueue))
	q.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if q.degraded.Load() && r.Method == http.MethodPost {
			queue.ServeHTTP(w, r)
			return
		}
		live.ServeHTTP(w, r)
	}))
	t.Cleanup(q.srv.Close)
	return q
}

// requireAuth stands for authentication (authfallback's Handler) in front
// of the idempotency handler: "Bearer <subject>[.<token version>]" is the
// verified caller <subject>, whatever the version.
func requireAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		sub, _, _ := strings.Cut(tok, ".")
		c := caller.New("https://idp.test", sub, []string{"write"}, "", nil)
		next.ServeHTTP(w, r.WithContext(caller.NewContext(r.Context(), c)))
	})
}

// subjectOf is the verified caller's subject, "" if none.
func subjectOf(r *http.Request) string {
	if c := caller.FromContext(r.Context()); c != nil {
		return c.Subject
	}
	return ""
}

func (q *queueServer) post(t *testing.T, path, key, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, q.srv.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer alice")
	req.Header.Set("Content-Type", "text/plain")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := q.srv.Client().Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// journal is a handler that records what it ran, in order.
type journal struct {
	mu     sync.Mutex
	ran    []string
	status int
}

func (j *journal) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	j.mu.Lock()
	j.ran = append(j.ran, r.URL.RequestURI()+" "+string(body))
	status := j.status
	j.mu.Unlock()
	if status == 0 {
		status = http.StatusCreated
	}
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, "done: "+string(body)+" for "+subjectOf(r)+" auth="+r.Header.Get("Authorization")+" at "+r.Host)
}

func (j *journal) log() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.ran...)
}

func TestQueueAndReplay(t *testing.T) {
	app := &journal{}
	q := newQueueServer(t, newStore(t), app)
	q.degraded.Store(true)

	resp, body := q.post(t, "/orders?n=1", `"q1"`, "one")
	require.Equal(t, http.StatusAccepted, resp.StatusCode, body)
	assert.Equal(t, "/orders?n=1", resp.Header.Get("Location"))
	assert.Equal(t, `"q1"`, resp.Header.Get("Idempotency-Key"))
	assert.NotEmpty(t, resp.Header.Get("Retry-After"))
	var accepted struct {
		Status string `json:"status"`
		Key    string `json:"idempotency_key"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &accepted))
	assert.Equal(t, "queued", accepted.Status)
	assert.Equal(t, "q1", accepted.Key)

	// Enqueued once, however often it is sent.
	resp, _ = q.post(t, "/orders?n=1", `"q1"`, "one")
	assert.Equal(t, http.StatusAccepted, resp.StatusCode)
	resp, _ = q.post(t, "/orders?n=2", `"q2"`, "two")
	assert.Equal(t, http.StatusAccepted, resp.StatusCode)
	resp, _ = q.post(t, "/orders?n=1", `"q1"`, "another payload")
	assert.Equal(t, http.StatusUnprocessableEntity, resp.StatusCode)
	resp, _ = q.post(t, "/orders", "", "no key")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "not queueable without a key")
	assert.NotEmpty(t, resp.Header.Get("Retry-After"))
	assert.Empty(t, app.log(), "nothing ran while degraded")

	// Recovered: polling through the normal chain still says 202.
	q.degraded.Store(false)
	resp, _ = q.post(t, "/orders?n=1", `"q1"`, "one")
	assert.Equal(t, http.StatusAccepted, resp.StatusCode)
	assert.Empty(t, app.log())

	n, err := q.x.Replay(context.Background(), q.app)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	host := strings.TrimPrefix(q.srv.URL, "http://")
	assert.Equal(t, []string{"/orders?n=1 one", "/orders?n=2 two"}, app.log(), "oldest first, each once")

	resp, body = q.post(t, "/orders?n=1", `"q1"`, "one")
	assert.Equal(t, http.StatusCreated, resp.StatusCode)
	assert.Equal(t, "true", resp.Header.Get(idempotency.HeaderReplayed))
	assert.Equal(t, "done: one for alice auth= at "+host, body,
		"the replayed request ran as its recorded caller, kept its host, and its token was not stored")

	n, err = q.x.Replay(context.Background(), q.app)
	require.NoError(t, err)
	assert.Zero(t, n, "nothing left")
	assert.Len(t, app.log(), 2)
}

func TestReplayHaltsUntilRecovered(t *testing.T) {
	app := &journal{status: http.StatusServiceUnavailable}
	q := newQueueServer(t, newStore(t), app)
	q.degraded.Store(true)
	for _, k := range []string{"a", "b"} {
		resp, _ := q.post(t, "/orders", k, k)
		require.Equal(t, http.StatusAccepted, resp.StatusCode)
	}

	n, err := q.x.Replay(context.Background(), q.app)
	assert.ErrorIs(t, err, idempotency.ErrReplayHalted)
	assert.Zero(t, n)
	assert.Equal(t, []string{"/orders a"}, app.log(), "b waits behind a")

	app.mu.Lock()
	app.status = 0
	app.mu.Unlock()
	n, err = q.x.Replay(context.Background(), q.app)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.Equal(t, []string{"/orders a", "/orders a", "/orders b"}, app.log(), "a kept its place")
}

func TestReplayStoresRequestErrorsNotStoredLive(t *testing.T) {
	// 409 is released for a live request (the client retries), but a
	// queued request has no client to retry it: its 409 is its answer, and
	// it must not halt every Replay behind it.
	for _, status := range []int{http.StatusConflict, http.StatusRequestTimeout, http.StatusTooEarly} {
		app := &journal{status: status}
		q := newQueueServer(t, newStore(t), app)
		q.degraded.Store(true)
		q.post(t, "/orders", "a", "a")
		q.post(t, "/orders", "b", "b")
		q.degraded.Store(false)

		n, err := q.x.Replay(context.Background(), q.app)
		require.NoError(t, err, status)
		assert.Equal(t, 2, n)
		resp, _ := q.post(t, "/orders", "a", "a")
		assert.Equal(t, status, resp.StatusCode)
		assert.Equal(t, "true", resp.Header.Get(idempotency.HeaderReplayed))
		assert.Equal(t, []string{"/orders a", "/orders b"}, app.log(), "each ran once")
	}
}

func TestEnqueueLocationStaysOnThisHost(t *testing.T) {
	x := idempotency.New(idempotency.Config{Store: newStore(t)})
	r := httptest.NewRequest(http.MethodPost, "https://api.example/", strings.NewReader("x"))
	r.URL.Path, r.RequestURI = "//evil.example/x", "//evil.example/x"
	r.Header.Set("Idempotency-Key", "k")
	w := httptest.NewRecorder()
	x.Enqueue(w, r)
	require.Equal(t, http.StatusAccepted, w.Code)
	loc, err := url.Parse(w.Header().Get("Location"))
	require.NoError(t, err)
	base, _ := url.Parse("https://api.example/orders")
	got := base.ResolveReference(loc)
	assert.Equal(t, "api.example", got.Host, w.Header().Get("Location"))
	assert.Equal(t, "//evil.example/x", got.Path, "the same path, where the client polls")
}

func TestReplayStoresPanicAsError(t *testing.T) {
	var calls atomic.Int64
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			panic("poison")
		}
		w.WriteHeader(http.StatusCreated)
	})
	q := newQueueServer(t, newStore(t), app)
	q.degraded.Store(true)
	q.post(t, "/orders", "poison", "x")
	q.post(t, "/orders", "fine", "y")
	q.degraded.Store(false)

	n, err := q.x.Replay(context.Background(), q.app)
	require.NoError(t, err)
	assert.Equal(t, 2, n, "a poisoned request does not block the queue")
	resp, _ := q.post(t, "/orders", "poison", "x")
	assert.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
	resp, _ = q.post(t, "/orders", "fine", "y")
	assert.Equal(t, http.StatusCreated, resp.StatusCode)
	assert.Equal(t, "true", resp.Header.Get(idempotency.HeaderReplayed))
}

func TestEnqueueIsAuthenticated(t *testing.T) {
	app := &journal{}
	q := newQueueServer(t, newStore(t), app)
	q.degraded.Store(true)
	// Enqueue runs after authentication: no token, nothing queued.
	req, _ := http.NewRequest(http.MethodPost, q.srv.URL+"/orders", strings.NewReader("evil"))
	req.Header.Set("Idempotency-Key", "k")
	resp, err := q.srv.Client().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	n, err := q.x.Replay(context.Background(), q.app)
	require.NoError(t, err)
	assert.Zero(t, n)

	// Enqueue in front of authentication, with credentials it could only
	// strip: refused, never a 202 whose replay could not be authorized.
	r := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader("x"))
	r.Header.Set("Idempotency-Key", "k")
	r.Header.Set("Authorization", "Bearer alice")
	w := httptest.NewRecorder()
	q.x.Enqueue(w, r)
	assertProblem(t, w, http.StatusServiceUnavailable, idempotency.ProblemNotQueued)
	assert.Empty(t, app.log())
}

func TestEnqueueStoreDown(t *testing.T) {
	store := &flakyStore{Store: newStore(t)}
	x := idempotency.New(idempotency.Config{Store: store})
	store.down.Store(true)
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader("x"))
	r.Header.Set("Idempotency-Key", "k")
	x.Enqueue(w, r)
	assertProblem(t, w, http.StatusServiceUnavailable, "idempotency-store-unavailable")
}

func TestReplayConcurrentReplicas(t *testing.T) {
	app := &journal{}
	store := newStore(t)
	q := newQueueServer(t, store, app)
	q.degraded.Store(true)
	for _, k := range []string{"1", "2", "3", "4", "5", "6"} {
		resp, _ := q.post(t, "/orders", k, k)
		require.Equal(t, http.StatusAccepted, resp.StatusCode)
	}
	other := idempotency.New(idempotency.Config{Store: store})
	var wg sync.WaitGroup
	var total atomic.Int64
	for _, x := range []*idempotency.Idempotency{q.x, other, q.x, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := x.Replay(context.Background(), q.app)
			assert.NoError(t, err)
			total.Add(int64(n))
		}()
	}
	wg.Wait()
	assert.Equal(t, int64(6), total.Load())
	assert.Len(t, app.log(), 6, "each queued request ran once")
}

func TestReplayRunsInOrderAcrossBatches(t *testing.T) {
	x := idempotency.New(idempotency.Config{Store: newStore(t)})
	app := &journal{}
	var want []string
	for i := range 40 {
		r := httptest.NewRequest(http.MethodPost, fmt.Sprintf("/orders?i=%d", i), strings.NewReader("b"))
		r.Header.Set("Idempotency-Key", fmt.Sprint("key-", i))
		w := httptest.NewRecorder()
		x.Enqueue(w, r)
		require.Equal(t, http.StatusAccepted, w.Code)
		want = append(want, fmt.Sprintf("/orders?i=%d b", i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n, err := x.Replay(ctx, x.Handler(app))
	assert.ErrorIs(t, err, context.Canceled)
	assert.Zero(t, n)

	n, err = x.Replay(context.Background(), x.Handler(app))
	require.NoError(t, err)
	assert.Equal(t, 40, n)
	assert.Equal(t, want, app.log())
}

func TestReplayOversizeStoredAsError(t *testing.T) {
	x := idempotency.New(idempotency.Config{Store: newStore(t), MaxResponseBytes: 4})
	r := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader("b"))
	r.Header.Set("Idempotency-Key", "k")
	x.Enqueue(httptest.NewRecorder(), r)
	app := x.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "far too long")
		w.(http.Flusher).Flush() // no client to stream to: ignored
	}))
	n, err := x.Replay(context.Background(), app)
	require.NoError(t, err)
	assert.Equal(t, 1, n)

	r = httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader("b"))
	r.Header.Set("Idempotency-Key", "k")
	w := httptest.NewRecorder()
	app.ServeHTTP(w, r)
	assertProblem(t, w, http.StatusInternalServerError, "idempotency-replay-failed")
	assert.Equal(t, "true", w.Header().Get(idempotency.HeaderReplayed))
}
