package idempotency_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/idempotency"
)

// orders is a handler that creates an order per run and counts its runs.
type orders struct {
	runs   atomic.Int64
	status int    // if zero, 201
	after  func() // if set, called once the response is written
}

func (o *orders) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := o.runs.Add(1)
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Location", fmt.Sprintf("/orders/%d", n))
	w.Header().Set("Set-Cookie", "session=secret")
	w.Header().Set("X-Internal", "not stored")
	status := o.status
	if status == 0 {
		status = http.StatusCreated
	}
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"order":%d,"echo":%q,"user":%q}`, n, body, r.Header.Get("Authorization"))
	if o.after != nil {
		o.after()
	}
}

func newStore(t *testing.T) *idempotency.MemoryStore {
	s := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func post(h http.Handler, key, body string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "/orders?src=test", strings.NewReader(body))
	if key != "" {
		r.Header.Set("Idempotency-Key", key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

type problemBody struct {
	Type   string `json:"type"`
	Status int    `json:"status"`
}

func assertProblem(t *testing.T, w *httptest.ResponseRecorder, status int, typ string) {
	t.Helper()
	assert.Equal(t, status, w.Code)
	assert.Equal(t, "application/problem+json", w.Header().Get("Content-Type"))
	var p problemBody
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &p), w.Body.String())
	assert.Equal(t, "https://holdfast-go.github.io/problems/"+typ, p.Type)
	assert.Equal(t, status, p.Status)
}

func TestHandlerStoresAndReplays(t *testing.T) {
	app := &orders{}
	var replays []idempotency.Event
	x := idempotency.New(idempotency.Config{
		Store:    newStore(t),
		OnReplay: func(e idempotency.Event) { replays = append(replays, e) },
	})
	h := x.Handler(app)

	first := post(h, `"k1"`, `{"sku":1}`, "Authorization", "Bearer alice")
	require.Equal(t, http.StatusCreated, first.Code)
	assert.Empty(t, first.Header().Get(idempotency.HeaderReplayed))
	assert.Equal(t, "session=secret", first.Header().Get("Set-Cookie"), "the first response is untouched")

	// Unquoted is the same key.
	again := post(h, `k1`, `{"sku":1}`, "Authorization", "Bearer alice")
	assert.Equal(t, int64(1), app.runs.Load(), "the handler ran once")
	assert.Equal(t, http.StatusCreated, again.Code)
	assert.Equal(t, first.Body.String(), again.Body.String())
	assert.Equal(t, "true", again.Header().Get(idempotency.HeaderReplayed))
	assert.Equal(t, "/orders/1", again.Header().Get("Location"))
	assert.Equal(t, "application/json", again.Header().Get("Content-Type"))
	assert.Empty(t, again.Header().Get("Set-Cookie"), "Set-Cookie is never replayed")
	assert.Empty(t, again.Header().Get("X-Internal"), "only allow-listed headers are replayed")
	assert.Equal(t, fmt.Sprint(first.Body.Len()), again.Header().Get("Content-Length"))
	require.Len(t, replays, 1)
	assert.Equal(t, "k1", replays[0].Key)
	assert.Equal(t, http.StatusCreated, replays[0].Status)

	// Another key runs again.
	other := post(h, `"k2"`, `{"sku":1}`, "Authorization", "Bearer alice")
	assert.Equal(t, http.StatusCreated, other.Code)
	assert.Equal(t, int64(2), app.runs.Load())
	assert.Equal(t, "/orders/1", post(h, "k1", `{"sku":1}`, "Authorization", "Bearer alice").Header().Get("Location"))
	assert.Equal(t, "/orders/2", post(h, "k2", `{"sku":1}`, "Authorization", "Bearer alice").Header().Get("Location"))
}

func TestHandlerSharedStoredHeadersStayDistinct(t *testing.T) {
	types := []string{"application/json", "application/json", "text/plain", "application/json"}
	var i atomic.Int64
	h := idempotency.New(idempotency.Config{Store: newStore(t)}).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := i.Add(1) - 1
		w.Header().Set("Content-Type", types[n])
		if n == 3 {
			w.Header().Add("Vary", "Accept")
		}
		w.WriteHeader(http.StatusCreated)
	}))
	for n := range types {
		post(h, fmt.Sprint("k", n), "x")
	}
	for n, typ := range types {
		w := post(h, fmt.Sprint("k", n), "x")
		assert.Equal(t, "true", w.Header().Get(idempotency.HeaderReplayed))
		assert.Equal(t, typ, w.Header().Get("Content-Type"), n)
		assert.Equal(t, n == 3, w.Header().Get("Vary") == "Accept", n)
	}
}

func TestHandlerMismatch(t *testing.T) {
	app := &orders{}
	var conflicts []string
	x := idempotency.New(idempotency.Config{
		Store:      newStore(t),
		OnConflict: func(e idempotency.Event) { conflicts = append(conflicts, e.Reason) },
	})
	h := x.Handler(app)
	require.Equal(t, http.StatusCreated, post(h, "k", `{"amount":10}`).Code)

	w := post(h, "k", `{"amount":1000}`)
	assertProblem(t, w, http.StatusUnprocessableEntity, "idempotency-key-reused")
	assert.Equal(t, int64(1), app.runs.Load())
	assert.Equal(t, []string{idempotency.ReasonMismatch}, conflicts)

	// Another query string is another request too.
	r := httptest.NewRequest(http.MethodPost, "/orders?src=other", strings.NewReader(`{"amount":10}`))
	r.Header.Set("Idempotency-Key", "k")
	rw := httptest.NewRecorder()
	h.ServeHTTP(rw, r)
	assertProblem(t, rw, http.StatusUnprocessableEntity, "idempotency-key-reused")
}

func TestHandlerKeyHandling(t *testing.T) {
	app := &orders{}
	h := idempotency.New(idempotency.Config{Store: newStore(t)}).Handler(app)
	strict := idempotency.New(idempotency.Config{Store: newStore(t), RequireKey: true}).Handler(app)

	t.Run("missing key passes", func(t *testing.T) {
		before := app.runs.Load()
		assert.Equal(t, http.StatusCreated, post(h, "", "x").Code)
		assert.Equal(t, http.StatusCreated, post(h, "", "x").Code)
		assert.Equal(t, before+2, app.runs.Load())
	})
	t.Run("RequireKey", func(t *testing.T) {
		assertProblem(t, post(strict, "", "x"), http.StatusBadRequest, "idempotency-key-missing")
	})
	t.Run("GET is not guarded", func(t *testing.T) {
		before := app.runs.Load()
		for range 2 {
			r := httptest.NewRequest(http.MethodGet, "/orders", nil)
			r.Header.Set("Idempotency-Key", "k")
			strict.ServeHTTP(httptest.NewRecorder(), r)
		}
		assert.Equal(t, before+2, app.runs.Load())
	})
	for name, values := range map[string][]string{
		"two lines":  {`"a"`, `"b"`},
		"too long":   {strings.Repeat("a", 256)},
		"list":       {`"a", "b"`},
		"bad syntax": {`"a`},
		"empty":      {``},
	} {
		t.Run(name, func(t *testing.T) {
			before := app.runs.Load()
			r := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader("x"))
			r.Header["Idempotency-Key"] = values
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			assertProblem(t, w, http.StatusBadRequest, "idempotency-key-invalid")
			assert.Equal(t, before, app.runs.Load())
		})
	}
	t.Run("255 characters", func(t *testing.T) {
		assert.Equal(t, http.StatusCreated, post(h, strings.Repeat("a", 255), "x").Code)
	})
}

func TestHandlerBodyTooLarge(t *testing.T) {
	app := &orders{}
	h := idempotency.New(idempotency.Config{Store: newStore(t), MaxRequestBytes: 8}).Handler(app)
	assertProblem(t, post(h, "k", "123456789"), http.StatusRequestEntityTooLarge, "idempotency-body-too-large")

	// Unknown length too.
	r := httptest.NewRequest(http.MethodPost, "/orders", io.MultiReader(strings.NewReader("12345"), strings.NewReader("6789")))
	r.ContentLength = -1
	r.Header.Set("Idempotency-Key", "k2")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	assertProblem(t, w, http.StatusRequestEntityTooLarge, "idempotency-body-too-large")
	assert.Zero(t, app.runs.Load())

	assert.Equal(t, http.StatusCreated, post(h, "k3", "12345678").Code, "at the limit")
}

func TestHandlerReleasesStatusesNotStored(t *testing.T) {
	for _, status := range []int{408, 409, 425, 429, 500, 502, 503, 504} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			app := &orders{status: status}
			var released []idempotency.Event
			h := idempotency.New(idempotency.Config{
				Store:     newStore(t),
				OnRelease: func(e idempotency.Event) { released = append(released, e) },
			}).Handler(app)
			assert.Equal(t, status, post(h, "k", "x").Code)
			assert.Equal(t, status, post(h, "k", "x").Code)
			assert.Equal(t, int64(2), app.runs.Load(), "the key was released, the retry ran")
			require.Len(t, released, 2)
			assert.Equal(t, idempotency.ReasonStatus, released[0].Reason)
			assert.Equal(t, status, released[0].Status)
		})
	}
	for _, status := range []int{200, 201, 204, 400, 404, 422} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			app := &orders{status: status}
			h := idempotency.New(idempotency.Config{Store: newStore(t)}).Handler(app)
			post(h, "k", "x")
			w := post(h, "k", "x")
			assert.Equal(t, status, w.Code)
			assert.Equal(t, int64(1), app.runs.Load(), "stored and replayed")
		})
	}
	t.Run("custom StoreStatus", func(t *testing.T) {
		app := &orders{status: 503}
		h := idempotency.New(idempotency.Config{Store: newStore(t), StoreStatus: func(int) bool { return true }}).Handler(app)
		post(h, "k", "x")
		assert.Equal(t, "true", post(h, "k", "x").Header().Get(idempotency.HeaderReplayed))
		assert.Equal(t, int64(1), app.runs.Load())
	})
}

func TestHandlerPassesThroughStreamingAndOversize(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reason string
		h      http.HandlerFunc
		want   string
	}{
		{"flush", idempotency.ReasonStreaming, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, "part1,")
			require.NoError(t, http.NewResponseController(w).Flush())
			_, _ = io.WriteString(w, "part2")
		}, "part1,part2"},
		{"oversize", idempotency.ReasonOversize, func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "0123456789")
			_, _ = io.WriteString(w, "abcdefghij")
		}, "0123456789abcdefghij"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var runs atomic.Int64
			var reasons []string
			h := idempotency.New(idempotency.Config{
				Store: newStore(t), MaxResponseBytes: 16,
				OnRelease: func(e idempotency.Event) { reasons = append(reasons, e.Reason) },
			}).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				runs.Add(1)
				tc.h(w, r)
			}))
			srv := httptest.NewServer(h)
			defer srv.Close()
			for range 2 {
				req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("x"))
				req.Header.Set("Idempotency-Key", "k")
				resp, err := srv.Client().Do(req)
				require.NoError(t, err)
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				assert.Equal(t, http.StatusOK, resp.StatusCode)
				assert.Equal(t, tc.want, string(body), "the client gets the whole response")
				assert.Empty(t, resp.Header.Get(idempotency.HeaderReplayed))
			}
			assert.Equal(t, int64(2), runs.Load(), "not stored: the key was released")
			assert.Equal(t, []string{tc.reason, tc.reason}, reasons)
		})
	}
}

// ctxHonoring is a store that, like a networked one, fails every call made
// with a context that is done (the memory store ignores contexts).
type ctxHonoring struct{ idempotency.Store }

func (s ctxHonoring) Claim(ctx context.Context, key, fp, owner string, lease time.Duration) (idempotency.Record, bool, error) {
	if err := ctx.Err(); err != nil {
		return idempotency.Record{}, false, err
	}
	return s.Store.Claim(ctx, key, fp, owner, lease)
}

func (s ctxHonoring) Complete(ctx context.Context, key, owner string, fence uint64, resp idempotency.Response, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.Store.Complete(ctx, key, owner, fence, resp, ttl)
}

func (s ctxHonoring) Release(ctx context.Context, key, owner string, fence uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.Store.Release(ctx, key, owner, fence)
}

func TestHandlerCompletesAfterClientLeft(t *testing.T) {
	app := &orders{}
	ctx, cancel := context.WithCancel(context.Background())
	h := idempotency.New(idempotency.Config{Store: ctxHonoring{newStore(t)}}).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cancel() // the client hangs up while the handler runs
		app.ServeHTTP(w, r)
	}))
	r := httptest.NewRequest(http.MethodPost, "/orders?src=test", strings.NewReader("x")).WithContext(ctx)
	r.Header.Set("Idempotency-Key", "k")
	h.ServeHTTP(httptest.NewRecorder(), r)
	w := post(h, "k", "x")
	assert.Equal(t, "true", w.Header().Get(idempotency.HeaderReplayed), "stored on a detached context")
	assert.Equal(t, int64(1), app.runs.Load())
}

func TestHandlerPanicReleasesAndRepanics(t *testing.T) {
	var calls atomic.Int64
	var reasons []string
	ctx, cancel := context.WithCancel(context.Background())
	h := idempotency.New(idempotency.Config{
		Store:     ctxHonoring{newStore(t)},
		OnRelease: func(e idempotency.Event) { reasons = append(reasons, e.Reason) },
	}).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusCreated) // buffered, never sent
			cancel()                          // the client is gone too: the release must still happen
			panic("boom")
		}
		w.WriteHeader(http.StatusCreated)
	}))
	r := httptest.NewRequest(http.MethodPost, "/orders?src=test", strings.NewReader("x")).WithContext(ctx) // as post sends it
	r.Header.Set("Idempotency-Key", "k")
	w := httptest.NewRecorder()
	assert.PanicsWithValue(t, "boom", func() { h.ServeHTTP(w, r) })
	assert.False(t, w.Flushed)
	assert.Equal(t, []string{idempotency.ReasonPanic}, reasons)

	w = post(h, "k", "x")
	assert.Equal(t, http.StatusCreated, w.Code, "the retry runs: the key was released")
	assert.Equal(t, int64(2), calls.Load())
}

func TestHandlerScopes(t *testing.T) {
	app := &orders{}
	h := idempotency.New(idempotency.Config{Store: newStore(t)}).Handler(app)

	alice := post(h, "shared-key", `{"sku":1}`, "Authorization", "Bearer alice")
	require.Equal(t, http.StatusCreated, alice.Code)
	mallory := post(h, "shared-key", `{"sku":1}`, "Authorization", "Bearer mallory")
	require.Equal(t, http.StatusCreated, mallory.Code)
	assert.Empty(t, mallory.Header().Get(idempotency.HeaderReplayed), "another caller never gets a replay")
	assert.NotContains(t, mallory.Body.String(), "alice")
	anon := post(h, "shared-key", `{"sku":1}`)
	assert.NotContains(t, anon.Body.String(), "alice")
	cookie := post(h, "shared-key", `{"sku":1}`, "Cookie", "session=alice")
	assert.NotContains(t, cookie.Body.String(), "alice")
	assert.Equal(t, int64(4), app.runs.Load())

	// HTTP/2 may split cookies over several lines: all of them count.
	split1 := post(h, "split", "x", "Cookie", "a=1", "Cookie", "session=alice")
	split2 := post(h, "split", "x", "Cookie", "a=1", "Cookie", "session=mallory")
	require.Equal(t, http.StatusCreated, split1.Code)
	assert.Empty(t, split2.Header().Get(idempotency.HeaderReplayed))
	assert.Equal(t, int64(6), app.runs.Load())

	t.Run("custom scope", func(t *testing.T) {
		app := &orders{}
		h := idempotency.New(idempotency.Config{
			Store: newStore(t),
			Scope: func(r *http.Request) string { return r.Header.Get("X-Verified-Subject") },
		}).Handler(app)
		post(h, "k", "x", "X-Verified-Subject", "alice", "Authorization", "Bearer token-1")
		w := post(h, "k", "x", "X-Verified-Subject", "alice", "Authorization", "Bearer token-2")
		assert.Equal(t, "true", w.Header().Get(idempotency.HeaderReplayed), "same subject, refreshed token")
		w = post(h, "k", "x", "X-Verified-Subject", "bob")
		assert.Empty(t, w.Header().Get(idempotency.HeaderReplayed))
		assertProblem(t, post(h, "k", "x"), http.StatusInternalServerError, "idempotency-scope-missing")
		assert.Equal(t, int64(2), app.runs.Load())
	})
}

// flakyStore fails every call while down is set, and fails to complete or
// release while crashed is set (a process that died after running): the
// owners it failed then stay dead, as a dead process would. failCompletes
// fails that many Complete calls (a store that fails after the handler ran,
// the process alive).
type flakyStore struct {
	idempotency.Store
	down          atomic.Bool
	crashed       atomic.Bool
	failCompletes atomic.Int64
	completes     atomic.Int64
	dead          sync.Map // owner -> true
}

var errDown = errors.New("store down")

func (s *flakyStore) deadOwner(owner string) bool {
	if s.crashed.Load() {
		s.dead.Store(owner, true)
		return true
	}
	_, dead := s.dead.Load(owner)
	return dead
}

func (s *flakyStore) Claim(ctx context.Context, key, fp, owner string, lease time.Duration) (idempotency.Record, bool, error) {
	if s.down.Load() {
		return idempotency.Record{}, false, errDown
	}
	return s.Store.Claim(ctx, key, fp, owner, lease)
}

func (s *flakyStore) Extend(ctx context.Context, key, owner string, fence uint64, lease time.Duration) error {
	if s.down.Load() || s.deadOwner(owner) {
		return errDown
	}
	return s.Store.Extend(ctx, key, owner, fence, lease)
}

func (s *flakyStore) Complete(ctx context.Context, key, owner string, fence uint64, resp idempotency.Response, ttl time.Duration) error {
	s.completes.Add(1)
	if s.down.Load() || s.deadOwner(owner) {
		return errDown
	}
	if s.failCompletes.Add(-1) >= 0 {
		// Stored, but the answer is lost: the retry must find it done.
		_ = s.Store.Complete(ctx, key, owner, fence, resp, ttl)
		return errDown
	}
	return s.Store.Complete(ctx, key, owner, fence, resp, ttl)
}

func (s *flakyStore) Release(ctx context.Context, key, owner string, fence uint64) error {
	if s.down.Load() || s.deadOwner(owner) {
		return errDown
	}
	return s.Store.Release(ctx, key, owner, fence)
}

func (s *flakyStore) Enqueue(ctx context.Context, key, fp string, req idempotency.Request, ttl time.Duration) (idempotency.Record, bool, error) {
	if s.down.Load() {
		return idempotency.Record{}, false, errDown
	}
	return s.Store.Enqueue(ctx, key, fp, req, ttl)
}

func TestHandlerStoreDown(t *testing.T) {
	app := &orders{}
	store := &flakyStore{Store: newStore(t)}
	var storeErrs atomic.Int64
	h := idempotency.New(idempotency.Config{
		Store:        store,
		OnStoreError: func(e idempotency.Event) { assert.ErrorIs(t, e.Err, errDown); storeErrs.Add(1) },
	}).Handler(app)

	store.down.Store(true)
	w := post(h, "k", "x")
	assertProblem(t, w, http.StatusServiceUnavailable, "idempotency-store-unavailable")
	assert.Equal(t, "1", w.Header().Get("Retry-After"))
	assert.Zero(t, app.runs.Load(), "fail closed: nothing ran")
	assert.Equal(t, int64(1), storeErrs.Load())

	store.down.Store(false)
	assert.Equal(t, http.StatusCreated, post(h, "k", "x").Code)
	assert.Equal(t, "true", post(h, "k", "x").Header().Get(idempotency.HeaderReplayed), "nothing lost: the retry ran once and is stored")
	assert.Equal(t, int64(1), app.runs.Load())

	t.Run("FailOpen", func(t *testing.T) {
		app := &orders{}
		store := &flakyStore{Store: newStore(t)}
		h := idempotency.New(idempotency.Config{Store: store, FailOpen: true}).Handler(app)
		store.down.Store(true)
		assert.Equal(t, http.StatusCreated, post(h, "k", "x").Code)
		assert.Equal(t, int64(1), app.runs.Load())
	})
}

func TestHandlerCrashThenTakeover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		app := &orders{}
		store := &flakyStore{Store: newStore(t)}
		var conflicts atomic.Int64
		h := idempotency.New(idempotency.Config{
			Store:      store,
			OnConflict: func(idempotency.Event) { conflicts.Add(1) },
		}).Handler(app)

		// The first instance runs the handler and dies before completing:
		// its claim stays, and nobody extends it.
		store.crashed.Store(true)
		post(h, "k", "x")
		store.crashed.Store(false)
		require.Equal(t, int64(1), app.runs.Load())

		time.Sleep(30 * time.Second)
		w := post(h, "k", "x")
		assertProblem(t, w, http.StatusConflict, "idempotency-key-in-use")
		assert.Equal(t, "1", w.Header().Get("Retry-After"))

		time.Sleep(31 * time.Second) // the 60 s lease is over
		w = post(h, "k", "x")
		assert.Equal(t, http.StatusCreated, w.Code)
		assert.Empty(t, w.Header().Get(idempotency.HeaderReplayed))
		assert.Equal(t, int64(2), app.runs.Load(), "the expired claim was taken over")
		assert.Equal(t, "true", post(h, "k", "x").Header().Get(idempotency.HeaderReplayed))
		assert.Equal(t, int64(1), conflicts.Load())
		time.Sleep(6 * time.Minute) // the dead claim's completion retries give up
	})
}

// TestHandlerCompleteRetried: the store fails when the handler's response
// is to be stored (the process lives on). The completion is retried while
// the lease is renewed, so a duplicate gets 409 meanwhile, and after the
// lease has long run out gets the stored response: the handler never runs
// twice.
func TestHandlerCompleteRetried(t *testing.T) {
	for _, lostAnswer := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			app := &orders{}
			store := &flakyStore{Store: newStore(t)}
			h := idempotency.New(idempotency.Config{Store: store, Lease: time.Second}).Handler(app)
			if lostAnswer {
				store.failCompletes.Store(1) // stored, but the answer lost: Complete is idempotent
			}
			outage := !lostAnswer
			if outage {
				// The store is down from the moment the handler ran.
				app.after = func() { store.down.Store(true) }
			}
			w := post(h, "k", "x")
			assert.Equal(t, http.StatusCreated, w.Code, "the client gets its answer")
			if outage {
				time.Sleep(3 * time.Second) // three leases: the store is down
				store.down.Store(false)
				app.after = nil
			}
			time.Sleep(10 * time.Second)
			w = post(h, "k", "x")
			assert.Equal(t, http.StatusCreated, w.Code)
			assert.Equal(t, "true", w.Header().Get(idempotency.HeaderReplayed), "stored by the retry")
			assert.Equal(t, int64(1), app.runs.Load(), "the handler ran once")
			assert.GreaterOrEqual(t, store.completes.Load(), int64(2), "Complete was retried")
		})
	}
}

func TestHandlerExtendsLeaseWhileRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var runs atomic.Int64
		release := make(chan struct{})
		h := idempotency.New(idempotency.Config{Store: newStore(t), Lease: 60 * time.Second}).Handler(
			http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				runs.Add(1)
				<-release
				w.WriteHeader(http.StatusCreated)
			}))
		done := make(chan *httptest.ResponseRecorder)
		go func() { done <- post(h, "k", "x") }()
		synctest.Wait()

		time.Sleep(5 * time.Minute) // five leases
		assertProblem(t, post(h, "k", "x"), http.StatusConflict, "idempotency-key-in-use")
		close(release)
		assert.Equal(t, http.StatusCreated, (<-done).Code)
		assert.Equal(t, "true", post(h, "k", "x").Header().Get(idempotency.HeaderReplayed))
		assert.Equal(t, int64(1), runs.Load())
	})
}

func TestHandlerExtendsManyLeases(t *testing.T) {
	// Claims share renewal timers: each is renewed, whichever started when.
	synctest.Test(t, func(t *testing.T) {
		const n = 20
		var runs atomic.Int64
		release := make(chan struct{})
		h := idempotency.New(idempotency.Config{Store: newStore(t), Lease: 60 * time.Second}).Handler(
			http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if runs.Add(1) <= n { // a second run (a lease lost) does not wait
					<-release
				}
				w.WriteHeader(http.StatusCreated)
			}))
		done := make(chan int, n)
		for i := range n {
			go func() { done <- post(h, fmt.Sprint("k", i), "x").Code }()
			time.Sleep(7 * time.Second) // starts spread over the renewal ticks
		}
		synctest.Wait()
		time.Sleep(5 * time.Minute)
		for i := range n {
			assertProblem(t, post(h, fmt.Sprint("k", i), "x"), http.StatusConflict, "idempotency-key-in-use")
		}
		close(release)
		for range n {
			assert.Equal(t, http.StatusCreated, <-done)
		}
		for i := range n {
			assert.Equal(t, "true", post(h, fmt.Sprint("k", i), "x").Header().Get(idempotency.HeaderReplayed))
		}
		assert.Equal(t, int64(n), runs.Load())
	})
}

func TestHandlerConcurrentDuplicatesRunOnce(t *testing.T) {
	const n = 50
	var (
		runs      atomic.Int64
		conflicts atomic.Int64
		enough    = make(chan struct{})
		once      sync.Once
	)
	x := idempotency.New(idempotency.Config{
		Store: newStore(t),
		OnConflict: func(e idempotency.Event) {
			if conflicts.Add(1) == n/2 {
				once.Do(func() { close(enough) })
			}
		},
	})
	srv := httptest.NewServer(x.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		// The barrier: the first request stays in flight until half of the
		// duplicates have been turned away, so they overlap for certain.
		select {
		case <-enough:
		case <-time.After(10 * time.Second):
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"order":1}`)
	})))
	defer srv.Close()

	start := make(chan struct{})
	var wg sync.WaitGroup
	type answer struct {
		status   int
		body     string
		replayed bool
	}
	answers := make(chan answer, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/orders", strings.NewReader(`{"sku":7}`))
			req.Header.Set("Idempotency-Key", `"dup"`)
			req.Header.Set("Authorization", "Bearer alice")
			resp, err := srv.Client().Do(req)
			if !assert.NoError(t, err) {
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			answers <- answer{resp.StatusCode, string(body), resp.Header.Get(idempotency.HeaderReplayed) == "true"}
		}()
	}
	close(start)
	wg.Wait()
	close(answers)

	assert.Equal(t, int64(1), runs.Load(), "the handler ran exactly once")
	var created, replayed, conflict int
	for a := range answers {
		switch a.status {
		case http.StatusCreated:
			created++
			assert.Equal(t, `{"order":1}`, a.body)
			if a.replayed {
				replayed++
			}
		case http.StatusConflict:
			conflict++
		default:
			t.Errorf("unexpected answer %d %s", a.status, a.body)
		}
	}
	assert.Equal(t, n, created+conflict)
	assert.Equal(t, created-1, replayed, "every 201 but the first is the stored one")
	assert.GreaterOrEqual(t, conflict, n/2)
}

func TestHandlerHijackAndResponseController(t *testing.T) {
	released := make(chan string, 2)
	x := idempotency.New(idempotency.Config{
		Store:     newStore(t),
		OnRelease: func(e idempotency.Event) { released <- e.Reason },
	})
	srv := httptest.NewServer(x.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		// Reaches the server's writer through Unwrap.
		require.NoError(t, rc.SetWriteDeadline(time.Now().Add(time.Minute)))
		conn, buf, err := rc.Hijack()
		if !assert.NoError(t, err) {
			return
		}
		defer conn.Close()
		_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
		_ = buf.Flush()
	})))
	defer srv.Close()
	for range 2 {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("x"))
		req.Header.Set("Idempotency-Key", "k")
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, "hijacked", string(body))
		select {
		case reason := <-released: // the client may see the answer before the release
			assert.Equal(t, idempotency.ReasonHijacked, reason)
		case <-time.After(5 * time.Second):
			t.Fatal("the key was not released")
		}
	}
}

func TestHandlerCompleteFailsStillAnswers(t *testing.T) {
	app := &orders{}
	store := &flakyStore{Store: newStore(t)}
	var errs atomic.Int64
	h := idempotency.New(idempotency.Config{
		Store:        store,
		OnStoreError: func(idempotency.Event) { errs.Add(1) },
	}).Handler(app)
	store.crashed.Store(true) // Claim works, Complete fails
	w := post(h, "k", "x")
	assert.Equal(t, http.StatusCreated, w.Code, "the client still gets its response")
	assert.Contains(t, w.Body.String(), `"order":1`)
	assert.Equal(t, int64(1), errs.Load())
}

func TestHandlerLogsNoSecrets(t *testing.T) {
	var buf strings.Builder
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	store := &flakyStore{Store: newStore(t)}
	h := idempotency.New(idempotency.Config{Store: store, Logger: logger}).Handler(&orders{status: 503})
	post(h, "secret-key-1", "secret-body", "Authorization", "Bearer secret-token")
	store.down.Store(true)
	post(h, "secret-key-2", "secret-body", "Authorization", "Bearer secret-token")

	mu.Lock()
	defer mu.Unlock()
	out := buf.String()
	assert.Contains(t, out, "released")
	assert.Contains(t, out, "store claim failed")
	assert.NotContains(t, out, "secret")
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// lostStore loses every claim at its first renewal, as if another replica
// had taken it over.
type lostStore struct{ idempotency.Store }

func (lostStore) Extend(context.Context, string, string, uint64, time.Duration) error {
	return idempotency.ErrNotOwner
}

func TestHandlerLeaseLostIsNotStored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var reasons []string
		h := idempotency.New(idempotency.Config{
			Store:     lostStore{newStore(t)},
			OnRelease: func(e idempotency.Event) { reasons = append(reasons, e.Reason) },
		}).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(30 * time.Second) // past the first renewal at 20 s
			w.WriteHeader(http.StatusCreated)
		}))
		w := post(h, "k", "x")
		assert.Equal(t, http.StatusCreated, w.Code, "the client still gets its answer")
		assert.Equal(t, []string{idempotency.ReasonLeaseLost}, reasons)
		w = post(h, "k", "x")
		assert.Equal(t, http.StatusConflict, w.Code, "a lost claim never stores; the record is another's")
	})
}

func TestHandlerInformationalAndSuperfluousStatus(t *testing.T) {
	h := idempotency.New(idempotency.Config{Store: newStore(t)}).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints) // goes out at once
		w.WriteHeader(http.StatusCreated)
		w.WriteHeader(http.StatusInternalServerError) // superfluous, ignored
		_, _ = io.WriteString(w, "ok")
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	var statuses []int
	for range 2 {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("x"))
		req.Header.Set("Idempotency-Key", "k")
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, "ok", string(b))
		statuses = append(statuses, resp.StatusCode)
		if len(statuses) == 2 {
			assert.Equal(t, "true", resp.Header.Get(idempotency.HeaderReplayed))
			assert.Equal(t, "</style.css>; rel=preload", resp.Header.Get("Link"))
		}
	}
	assert.Equal(t, []int{201, 201}, statuses)
}

func TestHandlerLargeBodyFingerprint(t *testing.T) {
	app := &orders{}
	h := idempotency.New(idempotency.Config{Store: newStore(t)}).Handler(app)
	big := strings.Repeat("a", 64<<10)
	require.Equal(t, http.StatusCreated, post(h, "k", big).Code)
	assert.Equal(t, "true", post(h, "k", big).Header().Get(idempotency.HeaderReplayed))
	assertProblem(t, post(h, "k", big[:len(big)-1]+"b"), http.StatusUnprocessableEntity, "idempotency-key-reused")
	// A small body equal to the large body's hash is another request too.
	sum := sha256.Sum256([]byte(big))
	assertProblem(t, post(h, "k", string(sum[:])), http.StatusUnprocessableEntity, "idempotency-key-reused")
	assert.Equal(t, int64(1), app.runs.Load())
}

// forged is a store that answers every claim with a done record that
// someone else wrote into the shared backend.
type forged struct {
	*idempotency.MemoryStore
	resp *idempotency.Response
}

func (f forged) Claim(_ context.Context, _, fingerprint, _ string, _ time.Duration) (idempotency.Record, bool, error) {
	return idempotency.Record{State: idempotency.StateDone, Fingerprint: fingerprint, Response: f.resp}, false, nil
}

func TestHandlerReplaysOnlyWhatItWouldStore(t *testing.T) {
	for _, bad := range []*idempotency.Response{nil, {Status: 0}, {Status: 42}, {Status: 101}, {Status: 1000}} {
		app := &orders{}
		var errs []error
		x := idempotency.New(idempotency.Config{Store: forged{newStore(t), bad},
			OnStoreError: func(e idempotency.Event) { errs = append(errs, e.Err) }})
		w := post(x.Handler(app), "k", "x")
		assertProblem(t, w, http.StatusServiceUnavailable, "idempotency-store-unavailable")
		assert.Len(t, errs, 1)
		assert.Zero(t, app.runs.Load(), "a done record is never run again")
	}

	resp := &idempotency.Response{Status: http.StatusCreated, Body: []byte("stored"), Header: http.Header{
		"Content-Type": {"text/plain"}, "Set-Cookie": {"session=attacker"}, "set-cookie": {"s=2"},
		"Transfer-Encoding": {"chunked"}, "Content-Length": {"999"}, "Connection": {"close"},
	}}
	w := post(idempotency.New(idempotency.Config{Store: forged{newStore(t), resp}}).Handler(&orders{}), "k", "x")
	assert.Equal(t, http.StatusCreated, w.Code)
	assert.Equal(t, "stored", w.Body.String())
	assert.Equal(t, "text/plain", w.Header().Get("Content-Type"))
	assert.Equal(t, "6", w.Header().Get("Content-Length"))
	for _, h := range []string{"Set-Cookie", "set-cookie", "Transfer-Encoding", "Connection"} {
		assert.NotContains(t, w.Header(), h)
	}
}

func TestHandlerReplayedHeadersAreCopies(t *testing.T) {
	h := idempotency.New(idempotency.Config{Store: newStore(t)}).Handler(&orders{})
	require.Equal(t, http.StatusCreated, post(h, "k", "x").Code)
	w := post(h, "k", "x")
	require.Equal(t, "/orders/1", w.Header().Get("Location"))
	w.Header()["Location"][0] = "https://evil.example/" // a middleware editing in place
	assert.Equal(t, "/orders/1", post(h, "k", "x").Header().Get("Location"), "the stored record is unchanged")
}

// TestHandlerLateWriteStaysOut checks that a handler that writes after it
// returned (a bug: net/http forbids it) never writes into another request's
// response, whose buffer may be the one it wrote to.
func TestHandlerLateWriteStaysOut(t *testing.T) {
	var late http.ResponseWriter
	x := idempotency.New(idempotency.Config{Store: newStore(t)})
	first := true
	h := x.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if first {
			first = false
			late = w
			_, _ = io.WriteString(w, "first")
			return
		}
		_, err := io.WriteString(late, "LEAK") // the first handler, writing late
		assert.Error(t, err, "a write after the handler returned fails")
		_, _ = io.WriteString(w, "second")
	}))
	assert.Equal(t, "first", post(h, "k1", "x").Body.String())
	w := post(h, "k2", "x")
	assert.Equal(t, "second", w.Body.String())
	replay := post(h, "k2", "x")
	assert.Equal(t, "true", replay.Header().Get(idempotency.HeaderReplayed))
	assert.Equal(t, "second", replay.Body.String(), "the stored response")
}

// A goroutine the handler left behind writes while the handler returns
// and its response is stored: its writes fail once the handler returned,
// and under -race nothing races with the storing (the capture's lock).
func TestHandlerLateWriterGoroutine(t *testing.T) {
	x := idempotency.New(idempotency.Config{Store: newStore(t)})
	stopped := make(chan struct{})
	var once sync.Once
	h := x.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "a")
		_, _ = io.WriteString(w, "b") // the pooled buffer
		once.Do(func() {
			go func() {
				defer close(stopped)
				for {
					if _, err := io.WriteString(w, "LEAK"); err != nil {
						return
					}
				}
			}()
		})
	}))
	got := post(h, "k1", "x").Body.String()
	<-stopped
	assert.NotContains(t, post(h, "k2", "x").Body.String(), "LEAK", "another request's response")
	replay := post(h, "k1", "x")
	assert.Equal(t, got, replay.Body.String(), "the stored response is the one sent")
}

func TestHandlerReplaysHeadersWithSeveralValues(t *testing.T) {
	h := idempotency.New(idempotency.Config{Store: newStore(t)}).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Link"] = []string{"</a>; rel=a", "</b>; rel=b", "</c>; rel=c"}
		w.Header()["Vary"] = []string{"Accept", "Accept-Language"}
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "ok")
	}))
	require.Equal(t, http.StatusCreated, post(h, "k", "x").Code)
	w := post(h, "k", "x")
	assert.Equal(t, "true", w.Header().Get(idempotency.HeaderReplayed))
	assert.Equal(t, []string{"</a>; rel=a", "</b>; rel=b", "</c>; rel=c"}, w.Header()["Link"])
	assert.Equal(t, []string{"Accept", "Accept-Language"}, w.Header()["Vary"])
	assert.Equal(t, []string{"text/plain"}, w.Header()["Content-Type"])
	assert.Equal(t, []string{"2"}, w.Header()["Content-Length"])
	assert.Equal(t, "ok", w.Body.String())
}
