package retry_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
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

	"github.com/holdfast-go/holdfast/internal/httpx"
	"github.com/holdfast-go/holdfast/retry"
)

// upstream is a real server that answers the scripted statuses in turn,
// repeating the last, and records the request bodies it saw.
type upstream struct {
	*httptest.Server
	mu       sync.Mutex
	statuses []int
	bodies   []string
	hits     atomic.Int64
}

func newUpstream(t *testing.T, statuses ...int) *upstream {
	u := &upstream{statuses: statuses}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(u.hits.Add(1))
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.bodies = append(u.bodies, string(b))
		u.mu.Unlock()
		status := u.statuses[min(n, len(u.statuses))-1]
		w.WriteHeader(status)
		fmt.Fprintf(w, "attempt %d", n)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) seen() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.bodies...)
}

// counting wraps a RoundTripper and tracks the response bodies it returns.
type counting struct {
	base     http.RoundTripper
	attempts atomic.Int64
	bodies   bodies
}

func (c *counting) RoundTrip(req *http.Request) (*http.Response, error) {
	c.attempts.Add(1)
	resp, err := c.base.RoundTrip(req)
	if err == nil {
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = c.bodies.new(string(data))
	}
	return resp, err
}

func fast() *retry.Transport {
	return &retry.Transport{BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, Budget: unlimited()}
}

func TestPOSTWithoutKeyTriedOnce(t *testing.T) {
	u := newUpstream(t, 503)
	tr := fast()
	var reason error
	tr.OnGiveUp = func(ev retry.GiveUpEvent) { reason = ev.Reason }
	resp, err := (&http.Client{Transport: tr}).Post(u.URL, "text/plain", strings.NewReader("charge 10 EUR"))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 503, resp.StatusCode)
	assert.EqualValues(t, 1, u.hits.Load(), "a POST without key is never repeated")
	var nr *retry.NotReplayableError
	require.ErrorAs(t, reason, &nr, "the reason is visible")
	assert.Equal(t, "POST", nr.Method)
}

func TestPOSTWithoutKeyConnectionErrorIsTyped(t *testing.T) {
	u := newUpstream(t, 200)
	u.Close() // connection refused
	resp, err := (&http.Client{Transport: fast()}).Post(u.URL, "text/plain", strings.NewReader("x"))
	if resp != nil {
		resp.Body.Close()
	}
	require.Error(t, err)
	var nr *retry.NotReplayableError
	assert.ErrorAs(t, err, &nr)
	var re *retry.Error
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 1, re.Attempts)
}

func TestPOSTWithKeyRetriedWithIdenticalBody(t *testing.T) {
	u := newUpstream(t, 503, 502, 200)
	c := &counting{base: http.DefaultTransport}
	tr := fast()
	tr.Base = c
	payload := `{"amount":10,"currency":"EUR"}`
	req, err := http.NewRequest(http.MethodPost, u.URL, strings.NewReader(payload))
	require.NoError(t, err)
	req.Header.Set("Idempotency-Key", "8e03978e-40d5-43e8-bc93-6894a57f9324")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	assert.Equal(t, "attempt 3", string(b))
	assert.Equal(t, []string{payload, payload, payload}, u.seen())

	total, closed := c.bodies.closed()
	assert.Equal(t, 3, total)
	assert.Equal(t, 2, closed, "both discarded responses closed, the returned one still open")
	require.NoError(t, resp.Body.Close())
	_, closed = c.bodies.closed()
	assert.Equal(t, 3, closed)
}

// reqBody is a request body that records its closing.
type reqBody struct {
	io.Reader
	closed *atomic.Int64
}

func (b reqBody) Close() error { b.closed.Add(1); return nil }

func TestRequestBodiesClosed(t *testing.T) {
	u := newUpstream(t, 503, 503, 200)
	var opened, closed atomic.Int64
	open := func() io.ReadCloser { opened.Add(1); return reqBody{strings.NewReader("payload"), &closed} }
	req, err := http.NewRequest(http.MethodPut, u.URL, nil)
	require.NoError(t, err)
	req.Body = open()
	req.GetBody = func() (io.ReadCloser, error) { return open(), nil }
	req.ContentLength = int64(len("payload"))
	tr := fast()
	tr.RetryIdempotent = true
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.EqualValues(t, 3, u.hits.Load())
	assert.Equal(t, []string{"payload", "payload", "payload"}, u.seen())
	assert.Eventually(t, func() bool { return closed.Load() == 3 }, 5*time.Second, time.Millisecond,
		"every request body closed (opened %d, closed %d)", opened.Load(), closed.Load())
	assert.EqualValues(t, 3, opened.Load())
}

func TestPUTRetriedOnlyWhenAsked(t *testing.T) {
	for _, ask := range []bool{false, true} {
		u := newUpstream(t, 503, 200)
		tr := fast()
		tr.RetryIdempotent = ask
		req, err := http.NewRequest(http.MethodPut, u.URL, strings.NewReader("v"))
		require.NoError(t, err)
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		resp.Body.Close()
		if ask {
			assert.EqualValues(t, 2, u.hits.Load())
		} else {
			assert.EqualValues(t, 1, u.hits.Load())
		}
	}
}

func TestStatusesNotRetried(t *testing.T) {
	for _, status := range []int{400, 401, 403, 404, 409, 410, 412, 422, 500, 501} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			u := newUpstream(t, status, 200)
			tr := fast()
			tr.OnRetry = func(retry.RetryEvent) { t.Error("retried") }
			resp, err := (&http.Client{Transport: tr}).Get(u.URL)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, status, resp.StatusCode)
			assert.EqualValues(t, 1, u.hits.Load())
		})
	}
}

func TestStatusesRetried(t *testing.T) {
	for _, status := range []int{429, 502, 503, 504} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			u := newUpstream(t, status, 200)
			resp, err := (&http.Client{Transport: fast()}).Get(u.URL)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, 200, resp.StatusCode)
			assert.EqualValues(t, 2, u.hits.Load())
		})
	}
}

func TestTLSCertificateErrorNotRetried(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshake failure is expected
	srv.StartTLS()
	defer srv.Close()
	// A client that does not trust the test server's certificate.
	c := &counting{base: &http.Transport{TLSClientConfig: &tls.Config{}}}
	tr := fast()
	tr.Base = c
	req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
	require.NoError(t, err)
	resp, err := tr.RoundTrip(req)
	assert.Nil(t, resp)
	var certErr *tls.CertificateVerificationError
	assert.ErrorAs(t, err, &certErr)
	var re *retry.Error
	assert.False(t, errors.As(err, &re), "returned as is, not as a give-up")
	assert.EqualValues(t, 1, c.attempts.Load())
}

func TestContextCancelNotRetried(t *testing.T) {
	arrived := make(chan struct{}, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done()
	}))
	defer srv.Close()
	c := &counting{base: http.DefaultTransport}
	tr := fast()
	tr.Base = c
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-arrived; cancel() }()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	require.NoError(t, err)
	resp, err := tr.RoundTrip(req)
	assert.Nil(t, resp)
	assert.ErrorIs(t, err, context.Canceled)
	assert.EqualValues(t, 1, c.attempts.Load())
}

func TestOpenBreakerNotRetried(t *testing.T) {
	var n int
	tr := fast()
	tr.Base = rtFunc(func(*http.Request) (*http.Response, error) {
		n++
		return nil, fmt.Errorf("breaker for upstream.test: %w", httpx.ErrCircuitOpen)
	})
	resp, err := tr.RoundTrip(get(t, context.Background()))
	assert.Nil(t, resp)
	assert.ErrorIs(t, err, httpx.ErrCircuitOpen)
	assert.Equal(t, 1, n)
}

func TestConnectionRefusedRetried(t *testing.T) {
	u := newUpstream(t, 200)
	u.Close()
	c := &counting{base: http.DefaultTransport}
	tr := fast()
	tr.Base = c
	req, err := http.NewRequest(http.MethodGet, u.URL, nil)
	require.NoError(t, err)
	resp, err := tr.RoundTrip(req)
	assert.Nil(t, resp)
	assert.ErrorIs(t, err, retry.ErrMaxAttempts)
	assert.EqualValues(t, 3, c.attempts.Load())
}

func TestBufferedBody(t *testing.T) {
	t.Run("fits: retried with the same body", func(t *testing.T) {
		u := newUpstream(t, 503, 200)
		tr := fast()
		tr.MaxBufferedBody = 64
		req, err := http.NewRequest(http.MethodPost, u.URL, nil)
		require.NoError(t, err)
		var closed atomic.Int64
		req.Body = reqBody{strings.NewReader("streamed"), &closed} // no GetBody
		req.Header.Set("Idempotency-Key", "k1")
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, []string{"streamed", "streamed"}, u.seen())
		assert.EqualValues(t, 1, closed.Load())
		assert.Nil(t, req.GetBody, "the caller's request is not modified")
	})
	t.Run("too large: sent once, intact", func(t *testing.T) {
		u := newUpstream(t, 503, 200)
		tr := fast()
		tr.MaxBufferedBody = 4
		var reason error
		tr.OnGiveUp = func(ev retry.GiveUpEvent) { reason = ev.Reason }
		req, err := http.NewRequest(http.MethodPost, u.URL, nil)
		require.NoError(t, err)
		var closed atomic.Int64
		req.Body = reqBody{strings.NewReader("longer than four"), &closed}
		req.Header.Set("Idempotency-Key", "k2")
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, []string{"longer than four"}, u.seen())
		var nr *retry.NotReplayableError
		assert.ErrorAs(t, reason, &nr)
		assert.Eventually(t, func() bool { return closed.Load() == 1 }, 5*time.Second, time.Millisecond)
	})
}

func TestRequestNotModified(t *testing.T) {
	u := newUpstream(t, 503, 200)
	req, err := http.NewRequest(http.MethodPost, u.URL, bytes.NewReader([]byte("abc")))
	require.NoError(t, err)
	req.Header.Set("Idempotency-Key", "k")
	ctx := req.Context()
	body := req.Body
	hdr := req.Header.Clone()
	resp, err := fast().RoundTrip(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, body, req.Body)
	assert.Equal(t, ctx, req.Context())
	assert.Equal(t, hdr, req.Header)
	assert.EqualValues(t, 2, u.hits.Load())
}

func TestZeroTransportAgainstRealServer(t *testing.T) {
	u := newUpstream(t, 502, 200)
	resp, err := (&http.Client{Transport: &retry.Transport{}}).Get(u.URL)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode)
	assert.EqualValues(t, 2, u.hits.Load())
}

func TestZeroTransportConcurrentFirstUse(t *testing.T) {
	// The lazily created budget must be one, shared, and race-free. In a
	// bubble the clock stands still, so the per-second minimum is granted
	// once however slow the machine: the bound is exact, not timing-bound.
	synctest.Test(t, func(t *testing.T) {
		var tr retry.Transport
		tr.Base = rtFunc(func(req *http.Request) (*http.Response, error) {
			return response(req, 503, http.NoBody), nil
		})
		tr.BaseDelay = time.Nanosecond
		tr.DisableJitter = true
		var wg sync.WaitGroup
		var attempts atomic.Int64
		tr.OnRetry = func(retry.RetryEvent) { attempts.Add(1) }
		for range 100 {
			wg.Go(func() {
				resp, err := tr.RoundTrip(get(t, context.Background()))
				if err == nil {
					resp.Body.Close()
				}
			})
		}
		wg.Wait()
		// One shared default budget: at most 20 % of 100 plus the per-second
		// minimum; a budget per goroutine would allow up to 200.
		assert.LessOrEqual(t, attempts.Load(), int64(20+retry.DefaultBudgetMinPerSecond))
		assert.GreaterOrEqual(t, attempts.Load(), int64(retry.DefaultBudgetMinPerSecond))
	})
}

func TestBlankIdempotencyKeyDoesNotCount(t *testing.T) {
	u := newUpstream(t, 503, 200)
	req, err := http.NewRequest(http.MethodPost, u.URL, strings.NewReader("x"))
	require.NoError(t, err)
	req.Header.Set("Idempotency-Key", "  ")
	resp, err := fast().RoundTrip(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.EqualValues(t, 1, u.hits.Load())
}

func TestPermanentErrorsNotRetried(t *testing.T) {
	for _, perm := range []error{
		&net.DNSError{Err: "no such host", Name: "nope.invalid", IsNotFound: true},
		fmt.Errorf("dial: %w", http.ErrSchemeMismatch),
		context.Canceled,
		&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}},
		x509.HostnameError{Host: "other.test"},
		tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"},
	} {
		t.Run(fmt.Sprintf("%T", perm), func(t *testing.T) {
			n := 0
			tr := fast()
			tr.Base = rtFunc(func(*http.Request) (*http.Response, error) { n++; return nil, perm })
			_, err := tr.RoundTrip(get(t, context.Background()))
			assert.ErrorIs(t, err, perm)
			assert.Equal(t, 1, n)
		})
	}
	t.Run("temporary DNS failure is retried", func(t *testing.T) {
		n := 0
		tr := fast()
		tr.Base = rtFunc(func(*http.Request) (*http.Response, error) {
			n++
			return nil, &net.DNSError{Err: "server misbehaving", Name: "upstream.test", IsTemporary: true}
		})
		_, err := tr.RoundTrip(get(t, context.Background()))
		assert.ErrorIs(t, err, retry.ErrMaxAttempts)
		assert.Equal(t, 3, n)
	})
}

func TestLoggerNeverLogsTheURL(t *testing.T) {
	var buf bytes.Buffer
	tr := fast()
	tr.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tr.Base = rtFunc(func(req *http.Request) (*http.Response, error) {
		return response(req, 503, http.NoBody), nil
	})
	req, err := http.NewRequest(http.MethodGet, "https://user:pw@upstream.test/reset?token=s3cr3t", nil)
	require.NoError(t, err)
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	resp.Body.Close()
	out := buf.String()
	assert.Contains(t, out, "host=upstream.test")
	assert.Contains(t, out, "retry: giving up")
	for _, secret := range []string{"s3cr3t", "pw", "/reset"} {
		assert.NotContains(t, out, secret)
	}
}
