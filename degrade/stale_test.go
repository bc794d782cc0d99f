package degrade

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/internal/httpx"
)

// origin is a handler whose answers a test switches.
type origin struct {
	fail    atomic.Bool
	calls   atomic.Int32
	headers func(h http.Header)
}

func (o *origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.calls.Add(1)
	if o.fail.Load() {
		w.Header().Set("Retry-After", "5")
		w.Header().Set("X-Failure", "yes")
		http.Error(w, "upstream down", http.StatusServiceUnavailable)
		return
	}
	if o.headers != nil {
		o.headers(w.Header())
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "hello %s %s", r.URL.Path, r.Header.Get("Authorization"))
}

func get(t *testing.T, h http.Handler, path string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

func TestStaleHandlerServesStaleWithHeaders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := &origin{headers: func(h http.Header) {
			h.Set("Cache-Control", "max-age=10")
			h.Set("Set-Cookie", "session=secret")
			h.Set("ETag", `"v1"`)
		}}
		var events []StaleEvent
		s := &Stale{OnStale: func(e StaleEvent) { events = append(events, e) }}
		outer := func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Request-Id", r.Header.Get("X-Req"))
				next.ServeHTTP(w, r)
			})
		}
		h := outer(s.Handler(o))

		// A scoped caller: the Set-Cookie response may be stored (without the cookie).
		rec := get(t, h, "/a", "X-Req", "1", "Authorization", "Bearer t")
		require.Equal(t, 200, rec.Code)
		assert.Equal(t, "hello /a Bearer t", rec.Body.String())
		assert.Empty(t, rec.Header().Get(httpx.HeaderDegraded))
		assert.Equal(t, 1, s.Len())

		time.Sleep(100 * time.Second)
		o.fail.Store(true)
		rec = get(t, h, "/a", "X-Req", "2", "Authorization", "Bearer t")
		assert.Equal(t, 200, rec.Code)
		assert.Equal(t, "hello /a Bearer t", rec.Body.String())
		assert.Equal(t, "100", rec.Header().Get("Age"))
		assert.Equal(t, "holdfast; fwd=stale; fwd-status=503; ttl=-90; detail=stale-if-error", rec.Header().Get("Cache-Status"))
		assert.Equal(t, "stale-if-error", rec.Header().Get(httpx.HeaderDegraded))
		assert.Equal(t, `"v1"`, rec.Header().Get("ETag"))
		assert.Equal(t, "2", rec.Header().Get("X-Request-Id"), "outer middleware's fields are this request's")
		assert.Equal(t, "17", rec.Header().Get("Content-Length"))
		assert.Empty(t, rec.Header().Get("Set-Cookie"), "cookies are never replayed")
		assert.Empty(t, rec.Header().Get("X-Failure"), "the failure's fields are discarded")
		assert.Empty(t, rec.Header().Get("Retry-After"))
		require.Len(t, events, 1)
		assert.Equal(t, 503, events[0].Status)
		assert.Equal(t, 100*time.Second, events[0].Age)

		// Nothing stored for /b: the failure passes through.
		rec = get(t, h, "/b")
		assert.Equal(t, 503, rec.Code)
		assert.Equal(t, "yes", rec.Header().Get("X-Failure"))
		assert.Contains(t, rec.Body.String(), "upstream down")
		assert.Empty(t, rec.Header().Get(httpx.HeaderDegraded))
	})
}

func TestStaleIfErrorAndMaxStaleBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cc := "max-age=60, stale-if-error=120"
		o := &origin{headers: func(h http.Header) { h.Set("Cache-Control", cc) }}
		s := &Stale{MaxStale: 10 * time.Minute}
		h := s.Handler(o)
		require.Equal(t, 200, get(t, h, "/sie").Code)
		cc = "max-age=0"
		require.Equal(t, 200, get(t, h, "/max").Code)
		o.fail.Store(true)

		time.Sleep(180 * time.Second) // 60 s fresh + 120 s stale-if-error: still ok
		assert.Equal(t, 200, get(t, h, "/sie").Code)
		assert.Equal(t, "holdfast; fwd=stale; fwd-status=503; ttl=-120; detail=stale-if-error", get(t, h, "/sie").Header().Get("Cache-Status"))
		time.Sleep(time.Second)
		assert.Equal(t, 503, get(t, h, "/sie").Code, "past stale-if-error")

		assert.Equal(t, 200, get(t, h, "/max").Code)
		time.Sleep(10*time.Minute - 181*time.Second)
		assert.Equal(t, 200, get(t, h, "/max").Code, "exactly MaxStale")
		time.Sleep(time.Second)
		assert.Equal(t, 503, get(t, h, "/max").Code, "past MaxStale")
	})
}

func TestStaleNeverStores(t *testing.T) {
	cases := map[string]struct {
		reqHdr []string
		cc     string
		extra  func(h http.Header)
		scope  func(*http.Request) string
	}{
		"no-store":            {cc: "no-store"},
		"NO-STORE mixed case": {cc: "max-age=5, NO-STORE"},
		"no-cache":            {cc: "no-cache"},
		"must-revalidate":     {cc: "max-age=5, must-revalidate"},
		"request no-store":    {reqHdr: []string{"Cache-Control", "no-store"}},
		"private anonymous":   {cc: "private, max-age=60"},
		"private qualified":   {cc: `private="X-Foo", max-age=60`},
		"vary star":           {extra: func(h http.Header) { h.Set("Vary", "*") }},
		"set-cookie shared":   {extra: func(h http.Header) { h.Set("Set-Cookie", "a=b") }},
		"s-maxage shared":     {cc: "s-maxage=60"},
		"proxy-revalidate":    {cc: "proxy-revalidate"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			o := &origin{headers: func(h http.Header) {
				if tc.cc != "" {
					h.Set("Cache-Control", tc.cc)
				}
				if tc.extra != nil {
					tc.extra(h)
				}
			}}
			s := &Stale{Scope: tc.scope}
			h := s.Handler(o)
			require.Equal(t, 200, get(t, h, "/x", tc.reqHdr...).Code)
			assert.Equal(t, 0, s.Len())
			o.fail.Store(true)
			assert.Equal(t, 503, get(t, h, "/x", tc.reqHdr...).Code)
		})
	}
}

func TestStaleNoStoreEvictsEarlierEntry(t *testing.T) {
	cc := "max-age=60"
	o := &origin{headers: func(h http.Header) { h.Set("Cache-Control", cc) }}
	s := &Stale{}
	h := s.Handler(o)
	get(t, h, "/x")
	require.Equal(t, 1, s.Len())
	cc = "no-store"
	get(t, h, "/x")
	assert.Equal(t, 0, s.Len())
	o.fail.Store(true)
	assert.Equal(t, 503, get(t, h, "/x").Code)
}

func TestStalePerCaller(t *testing.T) {
	o := &origin{headers: func(h http.Header) { h.Set("Cache-Control", "private, max-age=60") }}
	s := &Stale{}
	srv := httptest.NewServer(s.Handler(o))
	defer srv.Close()
	do := func(hdr ...string) (int, string, string) {
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/me", nil)
		require.NoError(t, err)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Add(hdr[i], hdr[i+1])
		}
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header.Get(httpx.HeaderDegraded)
	}
	code, body, _ := do("Authorization", "Bearer alice")
	require.Equal(t, 200, code)
	require.Equal(t, "hello /me Bearer alice", body)
	code, _, _ = do("Cookie", "session=carol")
	require.Equal(t, 200, code)
	code, _, _ = do() // anonymous: private, not stored
	require.Equal(t, 200, code)
	assert.Equal(t, 2, s.Len())

	o.fail.Store(true)
	code, body, deg := do("Authorization", "Bearer alice")
	assert.Equal(t, 200, code)
	assert.Equal(t, "hello /me Bearer alice", body)
	assert.Equal(t, "stale-if-error", deg)

	for _, hdr := range [][]string{
		{"Authorization", "Bearer bob"},
		{"Authorization", "Bearer alic"},
		{"Cookie", "session=mallory"},
		{"Authorization", "Bearer alice", "Cookie", "x=y"},
		{},
	} {
		code, body, _ = do(hdr...)
		assert.Equal(t, 503, code, "%v must not see another caller's response", hdr)
		assert.NotContains(t, body, "alice")
	}
	code, _, _ = do("Cookie", "session=carol")
	assert.Equal(t, 200, code)
}

func TestStaleCustomScope(t *testing.T) {
	o := &origin{headers: func(h http.Header) { h.Set("Cache-Control", "private") }}
	s := &Stale{Scope: func(r *http.Request) string { return r.Header.Get("X-Tenant") }}
	h := s.Handler(o)
	get(t, h, "/t", "X-Tenant", "acme", "Authorization", "Bearer 1")
	o.fail.Store(true)
	rec := get(t, h, "/t", "X-Tenant", "acme", "Authorization", "Bearer 2")
	assert.Equal(t, 200, rec.Code, "same tenant shares")
	assert.Equal(t, "hello /t Bearer 1", rec.Body.String())
	assert.Equal(t, 503, get(t, h, "/t", "X-Tenant", "other").Code)
	assert.Equal(t, 503, get(t, h, "/t").Code)
}

// A Scope that returns "" for a request with credentials (it could not
// tell the tenant) must not put that caller's response into the shared
// entry: a caller-specific response without Cache-Control would otherwise
// be served to everyone.
func TestStaleEmptyScopeNeverSharesCredentials(t *testing.T) {
	o := &origin{} // no Cache-Control at all: storable, and the body names the caller
	s := &Stale{Scope: func(r *http.Request) string { return r.Header.Get("X-Tenant") }}
	h := s.Handler(o)
	for _, hdr := range [][]string{
		{"Authorization", "Bearer alice"},
		{"Cookie", "session=carol"},
	} {
		require.Equal(t, 200, get(t, h, "/me", hdr...).Code)
	}
	o.fail.Store(true)
	rec := get(t, h, "/me", "Authorization", "Bearer alice")
	assert.Equal(t, 200, rec.Code, "the same credential gets its own response")
	assert.Equal(t, "hello /me Bearer alice", rec.Body.String())
	assert.Equal(t, 200, get(t, h, "/me", "Cookie", "session=carol").Code)
	for _, hdr := range [][]string{
		{},
		{"Authorization", "Bearer bob"},
		{"Cookie", "session=mallory"},
		{"X-Tenant", "acme"},
	} {
		rec := get(t, h, "/me", hdr...)
		assert.Equal(t, 503, rec.Code, "%v must not see another caller's response", hdr)
		assert.NotContains(t, rec.Body.String(), "alice")
	}
}

func TestStaleVary(t *testing.T) {
	o := &origin{headers: func(h http.Header) { h.Set("Vary", "Accept-Language, accept") }}
	h0 := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o.fail.Load() {
			w.WriteHeader(500)
			return
		}
		o.headers(w.Header())
		fmt.Fprint(w, r.Header.Get("Accept-Language"))
	})
	s := &Stale{}
	h := s.Handler(h0)
	get(t, h, "/v", "Accept-Language", "de")
	get(t, h, "/v", "Accept-Language", "fr")
	get(t, h, "/v", "Accept-Language", "fr") // same variant replaced
	assert.Equal(t, 2, s.Len())
	o.fail.Store(true)
	assert.Equal(t, "de", get(t, h, "/v", "Accept-Language", "de").Body.String())
	assert.Equal(t, "fr", get(t, h, "/v", "Accept-Language", "fr").Body.String())
	assert.Equal(t, 500, get(t, h, "/v", "Accept-Language", "it").Code)
	assert.Equal(t, 500, get(t, h, "/v", "Accept-Language", "de", "Accept", "text/html").Code)
}

func TestStaleStreamingAndLargeNotStored(t *testing.T) {
	s := &Stale{MaxEntryBytes: 10}
	var fail atomic.Bool
	h := s.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			w.WriteHeader(502)
			return
		}
		switch r.URL.Path {
		case "/stream":
			io.WriteString(w, "a")
			http.NewResponseController(w).Flush()
			io.WriteString(w, "b")
		case "/large":
			io.WriteString(w, "0123456789")
			io.WriteString(w, "X")
		case "/small":
			w.Header().Set("Content-Length", "3")
			io.WriteString(w, "abc")
		}
	}))
	rec := get(t, h, "/stream")
	assert.Equal(t, "ab", rec.Body.String())
	assert.True(t, rec.Flushed, "flush reaches the real writer")
	assert.Equal(t, "0123456789X", get(t, h, "/large").Body.String())
	assert.Equal(t, "abc", get(t, h, "/small").Body.String())
	assert.Equal(t, 1, s.Len())
	fail.Store(true)
	assert.Equal(t, 502, get(t, h, "/stream").Code)
	assert.Equal(t, 502, get(t, h, "/large").Code)
	assert.Equal(t, "abc", get(t, h, "/small").Body.String())
}

func TestStaleNonGETAndHeldFlush(t *testing.T) {
	s := &Stale{}
	var fail atomic.Bool
	h := s.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			w.WriteHeader(500)
			http.NewResponseController(w).Flush()
			io.WriteString(w, "secret stack trace")
			w.WriteHeader(501)
			return
		}
		io.WriteString(w, "ok")
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/p", nil))
	assert.Equal(t, 0, s.Len(), "POST is never stored")
	get(t, h, "/p")
	require.Equal(t, 1, s.Len())
	fail.Store(true)
	rec = get(t, h, "/p")
	assert.Equal(t, 200, rec.Code)
	assert.Equal(t, "ok", rec.Body.String())
	assert.NotContains(t, rec.Body.String(), "secret")
}

func TestStaleLRUBounds(t *testing.T) {
	s := &Stale{MaxEntries: 3}
	var fail atomic.Bool
	h := s.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			w.WriteHeader(500)
			return
		}
		io.WriteString(w, strings.Repeat("x", 1000))
	}))
	for _, p := range []string{"/1", "/2", "/3"} {
		get(t, h, p)
	}
	fail.Store(true)
	assert.Equal(t, 200, get(t, h, "/1").Code) // /1 is now most recent
	fail.Store(false)
	get(t, h, "/4") // evicts /2
	assert.Equal(t, 3, s.Len())
	fail.Store(true)
	assert.Equal(t, 500, get(t, h, "/2").Code)
	assert.Equal(t, 200, get(t, h, "/1").Code)
	assert.Equal(t, 200, get(t, h, "/3").Code)
	assert.Equal(t, 200, get(t, h, "/4").Code)

	// Bytes: room for two 1000-byte entries only.
	s2 := &Stale{MaxBytes: 2 * 1400}
	h2 := s2.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("x", 1000))
	}))
	for _, p := range []string{"/1", "/2", "/3", "/4"} {
		get(t, h2, p)
	}
	assert.Equal(t, 2, s2.Len())
	s2.mu.Lock()
	assert.LessOrEqual(t, s2.bytes, int64(2*1400))
	s2.mu.Unlock()
}

func TestStaleServeStaleAndLookup(t *testing.T) {
	o := &origin{}
	s := &Stale{}
	h := s.Handler(o)
	get(t, h, "/f")

	rec := httptest.NewRecorder()
	assert.True(t, s.ServeStale(rec, httptest.NewRequest("GET", "/f", nil)))
	assert.Equal(t, "hello /f ", rec.Body.String())
	assert.Equal(t, "stale-if-error", rec.Header().Get(httpx.HeaderDegraded))
	assert.Regexp(t, `^holdfast; hit; ttl=-?\d+; detail=stale-if-error$`, rec.Header().Get("Cache-Status"), "not forwarded: a hit")
	rec = httptest.NewRecorder()
	rec.Header().Set("X-Request-Id", "outer")
	assert.True(t, s.ServeStale(rec, httptest.NewRequest("GET", "/f", nil)))
	assert.Equal(t, "outer", rec.Header().Get("X-Request-Id"), "outer middleware's fields are kept")
	rec = httptest.NewRecorder()
	assert.False(t, s.ServeStale(rec, httptest.NewRequest("GET", "/other", nil)))
	assert.False(t, s.ServeStale(rec, httptest.NewRequest("POST", "/f", nil)))
	assert.Equal(t, 200, rec.Code)
	assert.Empty(t, rec.Body.String(), "nothing written on false")

	resp, ok := s.Lookup(httptest.NewRequest("GET", "/f", nil))
	require.True(t, ok)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, "hello /f ", string(b))
	assert.Equal(t, 200, resp.StatusCode)
	assert.Regexp(t, `^holdfast; hit; ttl=-?\d+; detail=stale-if-error$`, resp.Header.Get("Cache-Status"))
	_, ok = s.Lookup(httptest.NewRequest("GET", "/f", nil).WithContext(context.Background()))
	assert.True(t, ok)
	_, ok = s.Lookup(httptest.NewRequest("GET", "/nope", nil))
	assert.False(t, ok)
}

func TestStaleTransport(t *testing.T) {
	var mode atomic.Value // "ok", "503", "down", "open", "hang"
	mode.Store("ok")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=1")
		fmt.Fprintf(w, "data for %s", r.URL.Path)
	}))
	defer srv.Close()
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		switch mode.Load() {
		case "503":
			return &http.Response{StatusCode: 503, Body: io.NopCloser(strings.NewReader("down")), Header: http.Header{}, Request: r}, nil
		case "down":
			return nil, errors.New("dial tcp: connection refused")
		case "open":
			return nil, fmt.Errorf("payments: %w", httpx.ErrCircuitOpen)
		case "cancel":
			return nil, context.Canceled
		}
		return srv.Client().Transport.RoundTrip(r)
	})
	var events []StaleEvent
	s := &Stale{OnStale: func(e StaleEvent) { events = append(events, e) }}
	client := &http.Client{Transport: s.Transport(base)}
	read := func(path string) (*http.Response, string, error) {
		resp, err := client.Get(srv.URL + path)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b), nil
	}
	_, body, err := read("/d")
	require.NoError(t, err)
	require.Equal(t, "data for /d", body)
	assert.Equal(t, 1, s.Len())

	// A body closed before EOF is read to its end (it is small) and stored.
	resp, err := client.Get(srv.URL + "/small")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 2, s.Len())

	for _, m := range []string{"503", "down", "open"} {
		mode.Store(m)
		resp, body, err := read("/d")
		require.NoError(t, err, m)
		assert.Equal(t, 200, resp.StatusCode, m)
		assert.Equal(t, "data for /d", body, m)
		assert.Equal(t, "stale-if-error", resp.Header.Get(httpx.HeaderDegraded), m)
		assert.NotEmpty(t, resp.Header.Get("Age"), m)
		cs := resp.Header.Get("Cache-Status")
		assert.Regexp(t, `^holdfast; fwd=(bypass|stale); `, cs, "forwarded: not a hit")
		assert.Equal(t, m == "503", strings.Contains(cs, "; fwd-status=503;"), cs)
		assert.True(t, strings.HasSuffix(cs, "; detail=stale-if-error"), cs)
	}
	require.Len(t, events, 3)
	assert.Equal(t, 503, events[0].Status)
	assert.ErrorIs(t, events[2].Err, httpx.ErrCircuitOpen)

	mode.Store("down")
	_, _, err = read("/partial")
	assert.Error(t, err, "nothing stored: the error comes through")
	mode.Store("503")
	resp, body, err = read("/partial")
	require.NoError(t, err)
	assert.Equal(t, 503, resp.StatusCode)
	assert.Equal(t, "down", body)

	// The caller's own cancellation is not papered over.
	mode.Store("cancel")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/d", nil)
	_, err = s.Transport(base).RoundTrip(req)
	assert.ErrorIs(t, err, context.Canceled)

	// Non-GET passes straight through.
	mode.Store("down")
	req, _ = http.NewRequest("POST", srv.URL+"/d", nil)
	_, err = s.Transport(base).RoundTrip(req)
	assert.Error(t, err)
}

func TestStaleTransportAuthorizationScoped(t *testing.T) {
	var fail atomic.Bool
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		if fail.Load() {
			return nil, errors.New("down")
		}
		return &http.Response{StatusCode: 200, Header: http.Header{},
			Body: io.NopCloser(strings.NewReader("for " + r.Header.Get("Authorization"))), Request: r}, nil
	})
	s := &Stale{}
	rt := s.Transport(base)
	do := func(auth string) (string, error) {
		req, _ := http.NewRequest("GET", "https://api.example/me", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := rt.RoundTrip(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), nil
	}
	_, err := do("Bearer alice")
	require.NoError(t, err)
	fail.Store(true)
	got, err := do("Bearer alice")
	require.NoError(t, err)
	assert.Equal(t, "for Bearer alice", got)
	_, err = do("Bearer bob")
	assert.Error(t, err)
	_, err = do("")
	assert.Error(t, err)
}

func TestStaleUpdatesChangedResponses(t *testing.T) {
	s := &Stale{}
	var fail atomic.Bool
	var body, etag string
	var writes int
	h := s.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			w.WriteHeader(500)
			return
		}
		w.Header().Set("ETag", etag)
		n := max(1, len(body)/writes)
		for i := 0; i < len(body); i += n {
			io.WriteString(w, body[i:min(i+n, len(body))])
		}
	}))
	check := func(b, e string, chunks int) {
		t.Helper()
		body, etag, writes = b, e, chunks
		fail.Store(false)
		require.Equal(t, b, get(t, h, "/c").Body.String())
		fail.Store(true)
		rec := get(t, h, "/c")
		assert.Equal(t, b, rec.Body.String())
		assert.Equal(t, e, rec.Header().Get("ETag"))
		assert.Equal(t, 1, s.Len())
	}
	check("abcdef", "1", 1)
	check("abcdef", "1", 3) // unchanged, other chunking
	check("abcdeX", "1", 2) // differs in the last chunk
	check("abc", "1", 1)    // shorter
	check("abcdefgh", "1", 4)
	check("abcdefgh", "2", 1) // same body, new header
	check("", "2", 1)
}

func TestGateAndStaleTogether(t *testing.T) {
	c := New(Config{})
	defer c.Close()
	o := &origin{}
	s := &Stale{}
	srv := httptest.NewServer(c.Handler(s.Handler(o)))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/g")
	require.NoError(t, err)
	resp.Body.Close()

	c.Force(ReadOnly, "drill")
	o.fail.Store(true)
	resp, err = srv.Client().Get(srv.URL + "/g")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, "hello /g ", string(b))
	assert.Equal(t, "read-only, stale-if-error", resp.Header.Get(httpx.HeaderDegraded), "every reason is listed")

	resp, err = srv.Client().Get(srv.URL + "/other")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 503, resp.StatusCode)
	assert.Equal(t, "read-only", resp.Header.Get(httpx.HeaderDegraded), "the gate's marker stays on a failure that passes through")
}

func TestStaleHijackPassesThrough(t *testing.T) {
	s := &Stale{}
	srv := httptest.NewServer(s.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
		buf.Flush()
	})))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/h")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, "hi", string(b))
	assert.Equal(t, 0, s.Len())
}

func TestStaleTransportLargeBodyClosedEarly(t *testing.T) {
	big := strings.Repeat("x", 64<<10)
	var fail atomic.Bool
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		if fail.Load() {
			return nil, errors.New("down")
		}
		return &http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: -1,
			Body: io.NopCloser(strings.NewReader(big)), Request: r}, nil
	})
	s := &Stale{}
	rt := s.Transport(base)
	req, _ := http.NewRequest("GET", "https://api.example/big", nil)
	resp, err := rt.RoundTrip(req)
	require.NoError(t, err)
	buf := make([]byte, 100)
	_, _ = io.ReadFull(resp.Body, buf)
	resp.Body.Close()
	assert.Equal(t, 0, s.Len(), "most of the body unread: not stored")

	resp, err = rt.RoundTrip(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Len(t, b, len(big))
	assert.Equal(t, 1, s.Len())
	fail.Store(true)
	resp, err = rt.RoundTrip(req)
	require.NoError(t, err)
	b, _ = io.ReadAll(resp.Body)
	assert.Equal(t, big, string(b))
	assert.Equal(t, int64(len(big)), resp.ContentLength)
}

func TestStaleKeepsHandlerOverridesOfOuterFields(t *testing.T) {
	s := &Stale{}
	var fail atomic.Bool
	inner := s.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			w.WriteHeader(500)
			return
		}
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<p>hi</p>")
	}))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json") // outer default
		w.Header().Set("X-Frame-Options", "DENY")
		inner.ServeHTTP(w, r)
	})
	get(t, h, "/o")
	fail.Store(true)
	rec := get(t, h, "/o")
	assert.Equal(t, "<p>hi</p>", rec.Body.String())
	assert.Equal(t, "text/html", rec.Header().Get("Content-Type"))
	assert.Equal(t, "DENY", rec.Header().Get("X-Frame-Options"))
}

func TestStaleAgeAndExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fail atomic.Bool
		base := rtFunc(func(r *http.Request) (*http.Response, error) {
			if fail.Load() {
				return nil, errors.New("down")
			}
			now := time.Now()
			h := http.Header{}
			h.Set("Age", "30")
			h.Set("Date", now.UTC().Format(http.TimeFormat))
			h.Set("Expires", now.Add(100*time.Second).UTC().Format(http.TimeFormat))
			h.Set("Cache-Control", "stale-if-error=60")
			h.Set("Cache-Status", `"CDN"; hit`)
			return &http.Response{StatusCode: 200, Header: h, Body: io.NopCloser(strings.NewReader("x")), Request: r}, nil
		})
		s := &Stale{}
		rt := s.Transport(base)
		req, _ := http.NewRequest("GET", "https://api.example/a", nil)
		resp, err := rt.RoundTrip(req)
		require.NoError(t, err)
		io.ReadAll(resp.Body)
		resp.Body.Close()
		fail.Store(true)

		time.Sleep(20 * time.Second)
		resp, err = rt.RoundTrip(req)
		require.NoError(t, err)
		assert.Equal(t, "50", resp.Header.Get("Age"))
		assert.Equal(t, []string{`"CDN"; hit`, "holdfast; fwd=bypass; ttl=50; detail=stale-if-error"}, resp.Header.Values("Cache-Status"),
			"our member comes last, after the upstream caches'")

		// lifetime 100 s + stale-if-error 60 s = age 160 s, i.e. 130 s after storing.
		time.Sleep(110 * time.Second)
		_, err = rt.RoundTrip(req)
		assert.NoError(t, err)
		time.Sleep(time.Second)
		_, err = rt.RoundTrip(req)
		assert.Error(t, err)
	})
}

func TestStaleStatuses(t *testing.T) {
	s := &Stale{}
	var fail atomic.Bool
	h := s.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			w.WriteHeader(504)
			return
		}
		switch r.URL.Path {
		case "/found":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		case "/gone":
			http.Error(w, "gone", http.StatusGone)
		case "/teapot":
			w.WriteHeader(http.StatusTeapot)
		}
	}))
	for _, p := range []string{"/found", "/gone", "/teapot"} {
		get(t, h, p)
	}
	assert.Equal(t, 1, s.Len(), "only 410 is cacheable by default")
	fail.Store(true)
	assert.Equal(t, 504, get(t, h, "/found").Code)
	assert.Equal(t, 504, get(t, h, "/teapot").Code)
	assert.Equal(t, 410, get(t, h, "/gone").Code)
	assert.Contains(t, (&StatusError{URL: "u", StatusCode: 502}).Error(), "502")
}

// Closing a streamed body (unknown length) must not wait for more data,
// and a Close from another goroutine must not wait for a blocked Read.
func TestStaleTransportCloseDoesNotBlockOnStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pipes := make(chan *io.PipeWriter, 2)
		base := rtFunc(func(r *http.Request) (*http.Response, error) {
			pr, pw := io.Pipe()
			pipes <- pw
			return &http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: -1, Body: pr, Request: r}, nil
		})
		s := &Stale{}
		rt := s.Transport(base)
		open := func() (*http.Response, *io.PipeWriter) {
			req, _ := http.NewRequest("GET", "https://api.example/events", nil)
			resp, err := rt.RoundTrip(req)
			require.NoError(t, err)
			return resp, <-pipes
		}

		// Same goroutine: one event read, then Close while the stream is idle.
		resp, pw := open()
		go pw.Write([]byte("event 1\n"))
		buf := make([]byte, 64)
		n, err := resp.Body.Read(buf)
		require.NoError(t, err)
		require.Equal(t, "event 1\n", string(buf[:n]))
		closed := make(chan struct{})
		go func() { resp.Body.Close(); close(closed) }()
		synctest.Wait()
		select {
		case <-closed:
		default:
			t.Fatal("Close waits for more of an endless stream")
		}

		// Another goroutine: Close aborts a Read blocked on the stream.
		resp, _ = open()
		readErr := make(chan error, 1)
		go func() { _, err := resp.Body.Read(buf); readErr <- err }()
		synctest.Wait()
		closed = make(chan struct{})
		go func() { resp.Body.Close(); close(closed) }()
		synctest.Wait()
		select {
		case <-closed:
		default:
			t.Fatal("Close waits for a Read in flight")
		}
		assert.Error(t, <-readErr)
		assert.Equal(t, 0, s.Len())
	})
}

// failingWriter fails every Write after the first, like a connection that
// broke mid-response.
type failingWriter struct {
	*httptest.ResponseRecorder
	writes int
}

func (w *failingWriter) Write(p []byte) (int, error) {
	w.writes++
	if w.writes > 1 {
		return 0, errors.New("write: broken pipe")
	}
	return w.ResponseRecorder.Write(p)
}

// A response cut short (a failed write, a cancelled request) is never
// stored over the last good one.
func TestStaleHandlerDoesNotStoreCutResponses(t *testing.T) {
	s := &Stale{}
	var fail atomic.Bool
	h := s.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			w.WriteHeader(500)
			return
		}
		if r.Context().Err() != nil {
			return // gave up without writing: the client is gone
		}
		for _, part := range []string{"part1 ", "part2 ", "part3"} {
			if _, err := io.WriteString(w, part); err != nil {
				return
			}
		}
	}))
	require.Equal(t, "part1 part2 part3", get(t, h, "/r").Body.String())
	require.Equal(t, 1, s.Len())

	fw := &failingWriter{ResponseRecorder: httptest.NewRecorder()}
	h.ServeHTTP(fw, httptest.NewRequest("GET", "/r", nil))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/r", nil).WithContext(ctx))

	fail.Store(true)
	rec := get(t, h, "/r")
	assert.Equal(t, 200, rec.Code)
	assert.Equal(t, "part1 part2 part3", rec.Body.String(), "the last complete response is served")
}

// An inner fallback's answer (a breaker serving Stale.Lookup or its
// fallback document) is marked Holdfast-Degraded and must not replace the
// last good response, on either side.
func TestStaleDoesNotStoreFallbackAnswers(t *testing.T) {
	s := &Stale{}
	var mode atomic.Value
	mode.Store("ok")
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch mode.Load() {
		case "lookup": // a breaker's Cached hook connected to s.Lookup
			resp, ok := s.Lookup(r)
			require.True(t, ok)
			for k, v := range resp.Header {
				w.Header()[k] = v
			}
			w.WriteHeader(resp.StatusCode)
			io.Copy(w, resp.Body)
		case "document":
			w.Header().Set(httpx.HeaderDegraded, "circuit-open")
			io.WriteString(w, "fallback document")
		case "fail":
			w.WriteHeader(503)
		default:
			w.Header().Set("Cache-Control", "max-age=0")
			io.WriteString(w, "good")
		}
	})
	gateMarker := func(next http.Handler) http.Handler { // the gate's marker, set outside
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(httpx.HeaderDegraded, "degraded")
			next.ServeHTTP(w, r)
		})
	}
	h := gateMarker(s.Handler(inner))
	require.Equal(t, "good", get(t, h, "/x").Body.String())
	require.Equal(t, 1, s.Len(), "the gate's own marker does not stop storing")
	for _, m := range []string{"lookup", "lookup", "document"} {
		mode.Store(m)
		get(t, h, "/x")
	}
	mode.Store("fail")
	rec := get(t, h, "/x")
	assert.Equal(t, "good", rec.Body.String())
	assert.Len(t, rec.Header().Values("Cache-Status"), 1, "no Cache-Status members piled up by re-storing")

	// Client side.
	ts := &Stale{}
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		body, h := "good", http.Header{}
		switch mode.Load() {
		case "document":
			body = "fallback document"
			h.Set(httpx.HeaderDegraded, "circuit-open")
		case "fail":
			return nil, errors.New("down")
		}
		return &http.Response{StatusCode: 200, Header: h, Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
	})
	rt := ts.Transport(base)
	read := func() string {
		req, _ := http.NewRequest("GET", "https://api.example/x", nil)
		resp, err := rt.RoundTrip(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	mode.Store("ok")
	require.Equal(t, "good", read())
	mode.Store("document")
	require.Equal(t, "fallback document", read())
	mode.Store("fail")
	assert.Equal(t, "good", read())
}

// A client that sets its credentials under a non-canonical key still gets
// a per-credential entry.
func TestStaleTransportNonCanonicalCredentials(t *testing.T) {
	var fail atomic.Bool
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		if fail.Load() {
			return nil, errors.New("down")
		}
		return &http.Response{StatusCode: 200, Header: http.Header{},
			Body: io.NopCloser(strings.NewReader("for " + r.Header.Get("Authorization") + r.Header["authorization"][0])), Request: r}, nil
	})
	s := &Stale{}
	rt := s.Transport(base)
	req, _ := http.NewRequest("GET", "https://api.example/me", nil)
	req.Header["authorization"] = []string{"Bearer alice"}
	resp, err := rt.RoundTrip(req)
	require.NoError(t, err)
	io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, 1, s.Len())

	fail.Store(true)
	anon, _ := http.NewRequest("GET", "https://api.example/me", nil)
	_, err = rt.RoundTrip(anon)
	assert.Error(t, err, "alice's response must not be served to an anonymous request")
	resp, err = rt.RoundTrip(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	assert.Equal(t, "for Bearer alice", string(b))
}

// A failing HEAD gets the stored GET response's header, without a body;
// a HEAD response is never stored.
func TestStaleHandlerHead(t *testing.T) {
	o := &origin{headers: func(h http.Header) { h.Set("ETag", `"v1"`) }}
	s := &Stale{}
	h := s.Handler(o)
	head := func() *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodHead, "/h", nil))
		return rec
	}
	head()
	assert.Equal(t, 0, s.Len(), "HEAD is not stored")
	get(t, h, "/h")
	require.Equal(t, 1, s.Len())
	o.fail.Store(true)
	rec := head()
	assert.Equal(t, 200, rec.Code)
	assert.Empty(t, rec.Body.String())
	assert.Equal(t, `"v1"`, rec.Header().Get("ETag"))
	assert.Equal(t, "9", rec.Header().Get("Content-Length"))
	assert.Equal(t, "stale-if-error", rec.Header().Get(httpx.HeaderDegraded))
	assert.Equal(t, 1, s.Len())
}

func TestStaleTransportHead(t *testing.T) {
	var fail atomic.Bool
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		if fail.Load() {
			return nil, errors.New("down")
		}
		return &http.Response{StatusCode: 200, Header: http.Header{"Etag": {`"v1"`}},
			Body: io.NopCloser(strings.NewReader("data")), Request: r}, nil
	})
	s := &Stale{}
	rt := s.Transport(base)
	do := func(method string) (*http.Response, error) {
		req, _ := http.NewRequest(method, "https://api.example/x", nil)
		resp, err := rt.RoundTrip(req)
		if err == nil {
			io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}
	_, err := do("HEAD")
	require.NoError(t, err)
	assert.Equal(t, 0, s.Len(), "HEAD is not stored")
	_, err = do("GET")
	require.NoError(t, err)
	fail.Store(true)
	resp, err := do("HEAD")
	require.NoError(t, err)
	assert.Equal(t, `"v1"`, resp.Header.Get("ETag"))
	assert.Equal(t, http.NoBody, resp.Body)
	assert.Equal(t, "stale-if-error", resp.Header.Get(httpx.HeaderDegraded))
}

// http.ResponseController reaches the real writer through Stale's wrapper.
func TestStaleHandlerUnwrap(t *testing.T) {
	s := &Stale{}
	errc := make(chan error, 1)
	srv := httptest.NewServer(s.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		errc <- http.NewResponseController(w).SetWriteDeadline(time.Now().Add(time.Minute))
		io.WriteString(w, "ok")
	})))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	resp.Body.Close()
	assert.NoError(t, <-errc)
}
