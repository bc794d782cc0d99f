package retry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/failsafe-go/failsafe-go/failsafehttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/retry"
)

// amplification sends clients concurrent GETs through the RoundTripper made
// by wrap to an upstream that always answers 503, and returns upstream
// attempts per client request.
func amplification(tb testing.TB, clients int, wrap func(http.RoundTripper) http.RoundTripper) float64 {
	tb.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	base := &http.Transport{MaxIdleConnsPerHost: clients}
	defer base.CloseIdleConnections()
	client := &http.Client{Transport: wrap(base)}

	var wg sync.WaitGroup
	var failed atomic.Int64
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(srv.URL)
			if err != nil {
				failed.Add(1)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	wg.Wait()
	require.Zero(tb, failed.Load(), "every request gets the 503 back")
	return float64(hits.Load()) / float64(clients)
}

func failsafeRetry(base http.RoundTripper) http.RoundTripper {
	policy := failsafehttp.NewRetryPolicyBuilder().WithMaxAttempts(3).ReturnLastFailure().Build()
	return failsafehttp.NewRoundTripper(base, policy)
}

// TestAmplificationUnderOutage: 200 concurrent GETs against an upstream that
// always answers 503. With its default budget the zero Transport sends at
// most 1.3 attempts per request; failsafehttp's retry policy (3 attempts)
// sends 3.
func TestAmplificationUnderOutage(t *testing.T) {
	const clients = 200
	ours := amplification(t, clients, func(base http.RoundTripper) http.RoundTripper {
		return &retry.Transport{Base: base}
	})
	theirs := amplification(t, clients, failsafeRetry)
	t.Logf("upstream attempts per request, 200 concurrent GETs, always 503: retry.Transport{} %.3f, failsafehttp (3 attempts) %.3f", ours, theirs)
	assert.LessOrEqual(t, ours, 1.3)
	assert.Greater(t, ours, 1.0, "the budget still allows some retries")
	assert.InDelta(t, 3.0, theirs, 0.01)
}

func BenchmarkAmplification(b *testing.B) {
	for _, bm := range []struct {
		name string
		wrap func(http.RoundTripper) http.RoundTripper
	}{
		{"retry", func(base http.RoundTripper) http.RoundTripper { return &retry.Transport{Base: base} }},
		{"failsafehttp", failsafeRetry},
	} {
		b.Run(bm.name, func(b *testing.B) {
			var sum float64
			for b.Loop() {
				sum += amplification(b, 200, bm.wrap)
			}
			b.ReportMetric(sum/float64(b.N), "attempts/request")
		})
	}
}

// stub answers 200 without allocating.
type stub struct{ resp *http.Response }

func (s stub) RoundTrip(*http.Request) (*http.Response, error) { return s.resp, nil }

func newStub() stub {
	return stub{&http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody}}
}

// BenchmarkHappyPath measures the overhead of the transport when the first
// attempt succeeds, against the bare stub and failsafehttp with a retry
// policy.
func BenchmarkHappyPath(b *testing.B) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://upstream.test/", nil)
	require.NoError(b, err)
	for _, bm := range []struct {
		name string
		rt   http.RoundTripper
	}{
		{"stub", newStub()},
		{"retry", &retry.Transport{Base: newStub()}},
		{"failsafehttp", failsafehttp.NewRoundTripper(newStub(),
			failsafehttp.NewRetryPolicyBuilder().WithMaxAttempts(3).Build())},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				resp, err := bm.rt.RoundTrip(req)
				if err != nil || resp.StatusCode != 200 {
					b.Fatal(resp, err)
				}
			}
		})
	}
}

func TestHappyPathAllocs(t *testing.T) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://upstream.test/", nil)
	require.NoError(t, err)
	bare := newStub()
	tr := &retry.Transport{Base: newStub()}
	run := func(rt http.RoundTripper) float64 {
		return testing.AllocsPerRun(1000, func() { _, _ = rt.RoundTrip(req) })
	}
	assert.LessOrEqual(t, run(tr)-run(bare), 1.0, "at most one allocation above the bare RoundTripper")
}
