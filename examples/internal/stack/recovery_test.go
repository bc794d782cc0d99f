package stack

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/examples/internal/downstream"
	"github.com/holdfast-go/holdfast/idempotency"
)

// post sends a keyed order over real HTTP with token.
func post(t *testing.T, srv *httptest.Server, token, key, writeID string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/orders", strings.NewReader(`{"write_id":"`+writeID+`"}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set(idempotency.HeaderKey, key)
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// degradeByWrites fails the downstream and sends writes until the service
// queues them.
func degradeByWrites(t *testing.T, e *env, s *Service, srv *httptest.Server) {
	e.ds.SetMode(downstream.Fail5xx)
	i := 0
	require.Eventually(t, func() bool {
		i++
		post(t, srv, e.token, fmt.Sprintf(`"probe-%d"`, i), fmt.Sprintf("probe-%d", i))
		return s.Controller.Mode() == degrade.Degraded
	}, 10*time.Second, 10*time.Millisecond)
}

// TestRecoveryWithoutReads measures how long after the downstream's return
// the service is back to normal and its queue drained, with no client
// traffic at all after the writes were queued (write-only clients), and
// with reads flowing. The replayer's trials find the recovery.
func TestRecoveryWithoutReads(t *testing.T) {
	for _, mixed := range []bool{false, true} {
		name := "write-only"
		if mixed {
			name = "mixed"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			// The stack's defaults: the downstream breaker's 3 s delay, a
			// trial every second, a drain every 5 s, a one-minute failure
			// window that alone would hold the mode for a minute.
			e.cfg.BreakerDelay, e.cfg.TrialEvery, e.cfg.ReplayEvery, e.cfg.DetectWindow = 0, 0, 0, 0
			s := e.start(t)
			srv := httptest.NewServer(s)
			t.Cleanup(srv.Close)
			require.Equal(t, http.StatusOK, e.do(t, s, http.MethodGet, "/items/1", "", "").StatusCode)
			degradeByWrites(t, e, s, srv)

			const n = 50
			for i := range n {
				resp, body := post(t, srv, e.token, fmt.Sprintf(`"w-%d"`, i), fmt.Sprintf("w-%d", i))
				require.Equal(t, http.StatusAccepted, resp.StatusCode, body)
			}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			if mixed {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						case <-time.After(50 * time.Millisecond):
							resp, err := srv.Client().Get(srv.URL + "/items/1")
							if err == nil {
								resp.Body.Close()
							}
						}
					}
				}()
			}
			time.Sleep(1500 * time.Millisecond) // the outage goes on a while
			require.Equal(t, degrade.Degraded, s.Controller.Mode())

			healthy := time.Now()
			e.ds.SetMode(downstream.Healthy)
			var normalAfter time.Duration
			require.Eventually(t, func() bool {
				if normalAfter == 0 && s.Controller.Mode() == degrade.Normal {
					normalAfter = time.Since(healthy)
				}
				for i := range n {
					if e.ds.Executions(fmt.Sprintf("w-%d", i)) != 1 {
						return false
					}
				}
				return normalAfter != 0
			}, 20*time.Second, 10*time.Millisecond, "the queue drains without client traffic")
			drained := time.Since(healthy)
			close(stop)
			wg.Wait()
			t.Logf("%s: downstream healthy -> mode normal %.2fs, queue of %d drained %.2fs", name, normalAfter.Seconds(), n, drained.Seconds())
			assert.Less(t, drained, 6*time.Second, "within a few seconds of the downstream's return")
			for i := range n {
				assert.Equal(t, 1, e.ds.Executions(fmt.Sprintf("w-%d", i)), "w-%d ran once", i)
			}
		})
	}
}

// TestQueuedWriteOutlivesItsToken: a write queued (202) with a token that
// expires before the downstream returns runs once, as its caller, and the
// caller's new token gets its outcome; another caller gets nothing of it; a
// refreshed token's retry of a live write is a replay.
func TestQueuedWriteOutlivesItsToken(t *testing.T) {
	e := newEnv(t)
	e.cfg.TrialEvery = 100 * time.Millisecond
	s := e.start(t)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)

	// A live write, then its retry with a refreshed token: one execution.
	resp, first := post(t, srv, e.token, `"live"`, "live")
	require.Equal(t, http.StatusCreated, resp.StatusCode, first)
	refreshed := e.idp.Issue(jwt.MapClaims{"sub": "alice", "scope": "read write", "jti": "refreshed"})
	resp, again := post(t, srv, refreshed, `"live"`, "live")
	assert.Equal(t, http.StatusCreated, resp.StatusCode)
	assert.Equal(t, "true", resp.Header.Get(idempotency.HeaderReplayed), "same subject, new token: a replay")
	assert.Equal(t, first, again)
	assert.Equal(t, 1, e.ds.Executions("live"))

	degradeByWrites(t, e, s, srv)
	// exp is in whole seconds: rounded up, the token is valid for one to
	// two seconds (rounded down, it could expire before the request).
	exp := time.Now().Add(time.Second).Truncate(time.Second).Add(time.Second)
	shortLived := e.idp.Issue(jwt.MapClaims{"sub": "alice", "scope": "read write", "exp": exp.Unix()})
	resp, body := post(t, srv, shortLived, `"queued"`, "queued")
	require.Equal(t, http.StatusAccepted, resp.StatusCode, body)
	time.Sleep(time.Until(exp.Add(100 * time.Millisecond))) // the token expires inside the outage
	resp, _ = post(t, srv, shortLived, `"queued"`, "queued")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "the old token is expired")

	e.ds.SetMode(downstream.Healthy)
	require.Eventually(t, func() bool { return e.ds.Executions("queued") == 1 }, 10*time.Second, 20*time.Millisecond,
		"the queued write runs, whatever became of its token")
	newToken := e.idp.Issue(jwt.MapClaims{"sub": "alice", "scope": "read write", "jti": "new"})
	resp, body = post(t, srv, newToken, `"queued"`, "queued")
	assert.Equal(t, http.StatusCreated, resp.StatusCode, body)
	assert.Equal(t, "true", resp.Header.Get(idempotency.HeaderReplayed), "the new token gets the write's outcome")

	bob := e.idp.Issue(jwt.MapClaims{"sub": "bob", "scope": "read write"})
	resp, _ = post(t, srv, bob, `"queued"`, "queued")
	assert.Contains(t, []int{http.StatusCreated, http.StatusAccepted}, resp.StatusCode)
	assert.Empty(t, resp.Header.Get(idempotency.HeaderReplayed), "another caller gets nothing of alice's write")
	require.Eventually(t, func() bool { return e.ds.Executions("queued") == 2 }, 10*time.Second, 20*time.Millisecond,
		"bob's write is his own")
	time.Sleep(200 * time.Millisecond)
	assert.Equal(t, 1, e.ds.Executions("live"))
}

// TestOversizedBodyIs413: an order over 64 KiB is refused with 413
// problem+json, keyed (idempotency's limit) or not (the App's), live or
// queued.
func TestOversizedBodyIs413(t *testing.T) {
	e := newEnv(t)
	s := e.start(t)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	big := `{"write_id":"big","pad":"` + strings.Repeat("x", 100<<10) + `"}`
	send := func(key string, chunked bool) *http.Response {
		var body io.Reader = strings.NewReader(big)
		if chunked {
			body = io.MultiReader(body) // no length: sent chunked
		}
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/orders", body)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+e.token)
		if key != "" {
			req.Header.Set(idempotency.HeaderKey, key)
		}
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for _, key := range []string{`"big"`, ""} {
		for _, chunked := range []bool{false, true} {
			resp := send(key, chunked)
			assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, "key %q chunked %v", key, chunked)
			assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
		}
	}
	s.Controller.Force(degrade.Degraded, "test")
	resp := send(`"big-queued"`, true)
	assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, "queued")
	assert.Equal(t, 0, e.ds.Executions("big"))
}
