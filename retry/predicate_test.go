package retry

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Retryable replaces the default classification over real HTTP: 500 is not
// retried by default but is with a predicate that says so, and a predicate
// can refuse what the default retries (503).
func TestRetryablePredicate(t *testing.T) {
	var calls atomic.Int32
	var status atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			w.WriteHeader(int(status.Load()))
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	get := func(tr *Transport) int {
		calls.Store(0)
		resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	fast := func() *Transport {
		return &Transport{Base: srv.Client().Transport, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}
	}

	status.Store(500)
	assert.Equal(t, 500, get(fast()), "500 is not retried by default")
	assert.EqualValues(t, 1, calls.Load())

	tr := fast()
	tr.Retryable = func(resp *http.Response, err error) bool {
		return err == nil && resp.StatusCode == 500 || DefaultRetryable(resp, err)
	}
	assert.Equal(t, 200, get(tr), "the predicate retries 500")
	assert.EqualValues(t, 3, calls.Load())

	status.Store(503)
	tr = fast()
	tr.Retryable = func(resp *http.Response, err error) bool { return false }
	assert.Equal(t, 503, get(tr), "the predicate refuses what the default retries")
	assert.EqualValues(t, 1, calls.Load())

	// The predicate never makes an unsafe request replayable.
	tr = fast()
	tr.Retryable = func(*http.Response, error) bool { return true }
	calls.Store(0)
	resp, err := (&http.Client{Transport: tr}).Post(srv.URL, "text/plain", nil)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 503, resp.StatusCode)
	assert.EqualValues(t, 1, calls.Load(), "a POST without Idempotency-Key is sent once")
}
