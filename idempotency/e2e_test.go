package idempotency_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/idempotency"
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
