package idempotency_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/idempotency"
)

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// retrying stands for retry.Transport: it sends each request three times.
type retrying struct {
	base http.RoundTripper
	keys []string
}

func (rt *retrying) RoundTrip(r *http.Request) (*http.Response, error) {
	var resp *http.Response
	for i := range 3 {
		req := r
		if i > 0 {
			body, err := r.GetBody()
			if err != nil {
				return nil, err
			}
			req = r.Clone(r.Context())
			req.Body = body
		}
		rt.keys = append(rt.keys, req.Header.Get("Idempotency-Key"))
		var err error
		if resp != nil {
			resp.Body.Close()
		}
		resp, err = rt.base.RoundTrip(req)
		if err != nil {
			return nil, err
		}
	}
	return resp, nil
}

var uuidKey = regexp.MustCompile(`^"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"$`)

func TestTransportAddsOneKeyPerLogicalRequest(t *testing.T) {
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, string(b))
	}))
	defer srv.Close()
	inner := &retrying{base: srv.Client().Transport}
	client := &http.Client{Transport: &idempotency.Transport{Base: inner}}

	req, err := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("payload"))
	require.NoError(t, err)
	resp, err := client.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Empty(t, req.Header.Get("Idempotency-Key"), "the caller's request is not modified")
	require.Len(t, inner.keys, 3)
	assert.Regexp(t, uuidKey, inner.keys[0])
	assert.Equal(t, inner.keys[0], inner.keys[1], "every attempt carries the same key")
	assert.Equal(t, inner.keys[0], inner.keys[2])
	assert.Equal(t, []string{"payload", "payload", "payload"}, bodies, "the body is still replayable")

	// The next logical request gets another key.
	resp, err = client.Post(srv.URL, "text/plain", strings.NewReader("again"))
	require.NoError(t, err)
	resp.Body.Close()
	require.Len(t, inner.keys, 6)
	assert.NotEqual(t, inner.keys[0], inner.keys[3])
}

func TestTransportLeavesOthersAlone(t *testing.T) {
	var got []string
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		got = append(got, r.Method+" "+r.Header.Get("Idempotency-Key"))
		return &http.Response{StatusCode: 200, Body: http.NoBody, Request: r}, nil
	})
	tr := &idempotency.Transport{Base: base}
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		req := httptest.NewRequest(m, "http://x/", nil)
		_, err := tr.RoundTrip(req)
		require.NoError(t, err)
	}
	req := httptest.NewRequest(http.MethodPost, "http://x/", nil)
	req.Header.Set("Idempotency-Key", `"mine"`)
	_, err := tr.RoundTrip(req)
	require.NoError(t, err)
	req = httptest.NewRequest(http.MethodPatch, "http://x/", nil)
	_, err = tr.RoundTrip(req)
	require.NoError(t, err)
	require.Len(t, got, 5)
	assert.Equal(t, []string{"GET ", "PUT ", "DELETE ", `POST "mine"`}, got[:4])
	assert.True(t, strings.HasPrefix(got[4], `PATCH "`))

	custom := &idempotency.Transport{Base: base, Methods: []string{http.MethodPut}}
	_, err = custom.RoundTrip(httptest.NewRequest(http.MethodPut, "http://x/", nil))
	require.NoError(t, err)
	assert.Regexp(t, `^PUT "`, got[5])
}

func TestTransportKeyAcceptedByHandler(t *testing.T) {
	app := &orders{}
	srv := httptest.NewServer(idempotency.New(idempotency.Config{Store: newStore(t)}).Handler(app))
	defer srv.Close()
	inner := &retrying{base: srv.Client().Transport}
	client := &http.Client{Transport: &idempotency.Transport{Base: inner}}
	resp, err := client.Post(srv.URL, "application/json", strings.NewReader(`{"sku":1}`))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, "true", resp.Header.Get(idempotency.HeaderReplayed), "the last attempt is a replay")
	assert.Equal(t, int64(1), app.runs.Load(), "three attempts, one order")
}

func TestNewKeyIsRandom(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		k := idempotency.NewKey()
		assert.Len(t, k, 36)
		assert.False(t, seen[k])
		seen[k] = true
	}
}

// Each keyed copy has a key of its own: what a layer below does to the
// copy's header (an append to the key's values, a new value) changes no
// other request's key, nor the caller's header.
func TestTransportKeysAreOwnedByEachCopy(t *testing.T) {
	var keys []string
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		k := r.Header.Get("Idempotency-Key")
		keys = append(keys, k)
		r.Header["Idempotency-Key"] = append(r.Header["Idempotency-Key"], "appended")
		r.Header["Idempotency-Key"][0] = "overwritten"
		r.Header.Set("X-Below", "1")
		return &http.Response{StatusCode: 200, Body: http.NoBody, Request: r}, nil
	})
	tr := &idempotency.Transport{Base: base}
	req := httptest.NewRequest(http.MethodPost, "http://x/", nil)
	req.Header.Set("X-Caller", "c")
	var copies []*http.Request
	for range 100 {
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		copies = append(copies, resp.Request)
	}
	assert.Equal(t, http.Header{"X-Caller": {"c"}}, req.Header, "the caller's header is not modified")
	seen := map[string]bool{}
	for i, k := range keys {
		require.Regexp(t, uuidKey, k)
		require.False(t, seen[k], "a fresh key each time")
		seen[k] = true
		assert.Equal(t, []string{"overwritten", "appended"}, copies[i].Header["Idempotency-Key"])
	}
}
