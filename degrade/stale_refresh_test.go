package degrade

import (
	"container/list"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// An unchanged response keeps its entry (no copy) and its age counts from
// the last time it was answered, on both sides; a changed one replaces it.
func TestStaleUnchangedResponseRefreshesAge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fail atomic.Bool
		var body atomic.Value
		body.Store("v1")
		s := &Stale{}
		h := s.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if fail.Load() {
				w.WriteHeader(http.StatusBadGateway)
				return
			}
			w.Header().Set("Cache-Control", "max-age=0, stale-if-error=600")
			io.WriteString(w, body.Load().(string))
		}))
		require.Equal(t, "v1", get(t, h, "/a").Body.String())
		first := s.lookupEntry(t, "/a")
		time.Sleep(10 * time.Second)
		require.Equal(t, "v1", get(t, h, "/a").Body.String())
		assert.Same(t, first, s.lookupEntry(t, "/a"), "the same response keeps its entry")
		time.Sleep(5 * time.Second)
		fail.Store(true)
		rec := get(t, h, "/a")
		assert.Equal(t, "v1", rec.Body.String())
		assert.Equal(t, "5", rec.Header().Get("Age"), "age counted from the last good answer")

		fail.Store(false)
		body.Store("v2")
		time.Sleep(time.Second)
		require.Equal(t, "v2", get(t, h, "/a").Body.String())
		assert.NotSame(t, first, s.lookupEntry(t, "/a"))
		time.Sleep(2 * time.Second)
		fail.Store(true)
		rec = get(t, h, "/a")
		assert.Equal(t, "v2", rec.Body.String())
		assert.Equal(t, "2", rec.Header().Get("Age"))
		assert.Equal(t, 1, s.Len())
	})
}

// lookupEntry returns the entry stored for a GET of path without
// credentials.
func (s *Stale) lookupEntry(t *testing.T, path string) *entry {
	t.Helper()
	r, _ := http.NewRequest(http.MethodGet, "http://example.com"+path, nil)
	if !strings.Contains(path, "://") {
		r.URL.Scheme, r.URL.Host, r.Host = "", "", "example.com"
	}
	var buf [512]byte
	key, _ := s.appendPrimary(buf[:0], r)
	e, _ := s.peek(key, r)
	require.NotNil(t, e)
	return e
}

func TestStaleTransportUnchangedAndChangedResponses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fail atomic.Bool
		var body, etag string
		chunks := 1
		base := rtFunc(func(r *http.Request) (*http.Response, error) {
			if fail.Load() {
				return nil, errors.New("dial tcp: connection refused")
			}
			return &http.Response{
				StatusCode: 200, Request: r, ContentLength: int64(len(body)),
				Header: http.Header{"Cache-Control": {"max-age=0, stale-if-error=600"}, "Etag": {etag}},
				Body:   io.NopCloser(&chunked{s: body, n: max(1, len(body)/chunks)}),
			}, nil
		})
		s := &Stale{}
		rt := s.Transport(base)
		read := func() (*http.Response, string) {
			t.Helper()
			req, _ := http.NewRequest(http.MethodGet, "http://api.example/c", nil)
			req.Header.Set("Authorization", "Bearer t")
			resp, err := rt.RoundTrip(req)
			require.NoError(t, err)
			b, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())
			return resp, string(b)
		}
		check := func(b, e string, n int) {
			t.Helper()
			body, etag, chunks = b, e, n
			fail.Store(false)
			_, got := read()
			require.Equal(t, b, got)
			time.Sleep(3 * time.Second)
			fail.Store(true)
			resp, got := read()
			assert.Equal(t, b, got)
			assert.Equal(t, e, resp.Header.Get("Etag"))
			assert.Equal(t, "3", resp.Header.Get("Age"), "age counted from the last good answer")
			assert.Equal(t, 1, s.Len())
		}
		check("abcdef", "1", 1)
		check("abcdef", "1", 3) // unchanged, other chunking: refreshed
		check("abcdeX", "1", 2) // differs in the last chunk
		check("abc", "1", 1)    // shorter
		check("abcdefgh", "1", 4)
		check("abcdefgh", "2", 1) // same body, new header
		check("", "2", 1)
		check("", "2", 1)
	})
}

// chunked reads s n bytes at a time.
type chunked struct {
	s string
	n int
}

func (c *chunked) Read(p []byte) (int, error) {
	if c.s == "" {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), c.n)], c.s)
	c.s = c.s[k:]
	return k, nil
}

// A refresh racing with an eviction stores a new entry instead.
func TestStaleRefreshOfEvictedEntry(t *testing.T) {
	s := &Stale{MaxEntries: 1}
	h := s.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "same")
	}))
	get(t, h, "/a")
	e := s.lookupEntry(t, "/a")
	r, _ := http.NewRequest(http.MethodGet, "/a", nil)
	r.Host = "example.com"
	var buf [512]byte
	key, _ := s.appendPrimary(buf[:0], r)
	_, el := s.peek(key, r)
	require.NotNil(t, el)
	assert.False(t, s.refresh(el, &entry{primary: e.primary}, time.Second), "not the stored entry")
	for i := range 3 {
		get(t, h, "/b"+strconv.Itoa(i)) // evicts /a
	}
	assert.False(t, s.refresh(el, e, time.Second))
	get(t, h, "/a")
	assert.NotSame(t, e, s.lookupEntry(t, "/a"))
}

func TestAppendRequestURI(t *testing.T) {
	for _, raw := range []string{
		"http://h/", "http://h", "http://h/a/b?x=1&y=2", "http://h/a%2Fb", "http://h/a b", "http://h/?",
		"http://h/%7Euser", "mailto:someone@example.com", "http://h/p?", "/just/a/path?q", "*",
	} {
		u, err := url.Parse(raw)
		require.NoError(t, err, raw)
		assert.Equal(t, u.RequestURI(), string(appendRequestURI(nil, u)), raw)
	}
	u := &url.URL{Scheme: "http", Opaque: "//other/path", RawQuery: "a=1"}
	assert.Equal(t, u.RequestURI(), string(appendRequestURI([]byte("k:"), u))[2:])
	u = &url.URL{Path: "/p", ForceQuery: true}
	assert.Equal(t, u.RequestURI(), string(appendRequestURI(nil, u)))
}

func FuzzAppendRequestURI(f *testing.F) {
	f.Add("http://h/a/b?x=1")
	f.Add("http://h/a%2Fb?")
	f.Add("scheme://h//x")
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.Parse(raw)
		if err != nil {
			return
		}
		if got, want := string(appendRequestURI(nil, u)), u.RequestURI(); got != want {
			t.Fatalf("appendRequestURI(%q) = %q, RequestURI %q", raw, got, want)
		}
	})
}

// A no-store answer evicts the variant stored for the same caller and URL,
// and only that one; the count of entries per URL that lets a no-store
// answer skip building its key follows every store and removal.
func TestStaleTransportNoStoreEvicts(t *testing.T) {
	var cc atomic.Value
	cc.Store("max-age=60")
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{
			StatusCode: 200, Request: r, ContentLength: 2,
			Header: http.Header{"Cache-Control": {cc.Load().(string)}},
			Body:   io.NopCloser(strings.NewReader("ok")),
		}, nil
	})
	s := &Stale{MaxEntries: 2}
	rt := s.Transport(base)
	do := func(path, token string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://api.example"+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := rt.RoundTrip(req)
		require.NoError(t, err)
		_, _ = io.ReadAll(resp.Body)
		require.NoError(t, resp.Body.Close())
	}
	urls := func() map[string]int {
		s.mu.Lock()
		defer s.mu.Unlock()
		out := map[string]int{}
		for k, v := range s.urls {
			out[k] = v
		}
		return out
	}
	do("/a", "alice")
	do("/a", "bob")
	assert.Equal(t, 2, s.Len())
	require.Len(t, urls(), 1)
	for _, n := range urls() {
		assert.Equal(t, 2, n, "two scopes under one URL")
	}
	cc.Store("no-store")
	do("/a", "alice")
	assert.Equal(t, 1, s.Len(), "alice's variant evicted, bob's kept")
	do("/b", "alice") // nothing stored under /b: nothing to evict
	assert.Equal(t, 1, s.Len())
	cc.Store("max-age=60")
	do("/b", "carol")
	do("/c", "carol") // MaxEntries 2: bob's /a goes
	assert.Equal(t, 2, s.Len())
	got := urls()
	assert.Len(t, got, 2, "the URL of the evicted entry is forgotten")
	cc.Store("no-store")
	do("/b", "carol")
	do("/c", "carol")
	assert.Equal(t, 0, s.Len())
	assert.Empty(t, urls())
}

// entry.sameHeader (the transport's comparison, which looks up the stored
// fields in the live header when it can) agrees with sameStoredHeader.
func TestEntrySameHeader(t *testing.T) {
	stored := http.Header{"Content-Type": {"application/json"}, "Cache-Control": {"max-age=0"}, "Etag": {`"1"`}}
	e := newEntry("k", &http.Request{Header: http.Header{}}, cacheControl{maxAge: 0, sMaxAge: -1, staleIfError: -1},
		200, stored, 0, nil, time.Now())
	with := func(f func(h http.Header)) http.Header {
		h := stored.Clone()
		f(h)
		return h
	}
	for name, tc := range map[string]struct {
		live http.Header
		same bool
	}{
		"equal":                      {stored.Clone(), true},
		"plus Content-Length":        {with(func(h http.Header) { h.Set("Content-Length", "2") }), true},
		"plus Age":                   {with(func(h http.Header) { h.Set("Age", "5") }), true},
		"plus Set-Cookie and Age":    {with(func(h http.Header) { h.Set("Set-Cookie", "a=b"); h.Set("Age", "1") }), true},
		"value changed":              {with(func(h http.Header) { h.Set("Etag", `"2"`) }), false},
		"second value":               {with(func(h http.Header) { h.Add("Etag", `"2"`) }), false},
		"field missing":              {with(func(h http.Header) { h.Del("Etag") }), false},
		"field swapped":              {with(func(h http.Header) { h.Del("Etag"); h.Set("Vary", "Accept") }), false},
		"swapped for Content-Length": {with(func(h http.Header) { h.Del("Etag"); h.Set("Content-Length", "2") }), false},
		"empty value for missing":    {with(func(h http.Header) { h.Del("Etag"); h["X-A"] = []string{} }), false},
		"field added":                {with(func(h http.Header) { h.Set("X-A", "1") }), false},
		"Connection":                 {with(func(h http.Header) { h.Set("Connection", "close") }), false},
		"non-canonical key":          {with(func(h http.Header) { h.Del("Etag"); h["etag"] = []string{`"1"`} }), false},
		"empty":                      {http.Header{}, false},
	} {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.same, e.sameHeader(tc.live, nil))
			assert.Equal(t, sameStoredHeader(tc.live, stored, nil), e.sameHeader(tc.live, nil), "as sameStoredHeader")
		})
	}
	empty := newEntry("k", &http.Request{Header: http.Header{}}, cacheControl{maxAge: -1, sMaxAge: -1, staleIfError: -1},
		200, http.Header{}, 0, nil, time.Now())
	assert.True(t, empty.sameHeader(http.Header{}, nil))
	assert.True(t, empty.sameHeader(http.Header{"Content-Length": {"0"}}, nil))
	assert.False(t, empty.sameHeader(http.Header{"X-A": {"1"}}, nil))
}

// refreshElement refreshes only an entry its element still holds: not
// one whose element was removed (evicted) or given a newer entry.
func TestStaleRefreshElement(t *testing.T) {
	s := &Stale{MaxEntries: 2}
	h := s.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	}))
	peek := func(path string) (*entry, *list.Element) {
		t.Helper()
		r, _ := http.NewRequest(http.MethodGet, "http://example.com"+path, nil)
		r.URL.Scheme, r.URL.Host, r.Host = "", "", "example.com"
		var buf [512]byte
		key, _ := s.appendPrimary(buf[:0], r)
		e, el := s.peek(key, r)
		require.NotNil(t, e)
		require.Same(t, e, el.Value)
		return e, el
	}
	get(t, h, "/a")
	a, ael := peek("/a")
	assert.True(t, s.refresh(ael, a, time.Second), "alone in the list: its front and back")
	get(t, h, "/b")
	assert.True(t, s.refresh(ael, a, time.Second), "at the back")
	get(t, h, "/b")
	b, bel := peek("/b")
	assert.True(t, s.refresh(bel, b, time.Second))
	assert.True(t, s.refresh(ael, a, time.Second), "moved to the front again")
	get(t, h, "/c") // evicts /b, the least recently used
	assert.False(t, s.refresh(bel, b, time.Second), "evicted")
	assert.True(t, s.refresh(ael, a, time.Second))

	// A new entry for the same variant takes the element over.
	s.store(newEntry(a.primary, &http.Request{Header: http.Header{}}, cacheControl{maxAge: -1, sMaxAge: -1, staleIfError: -1},
		200, http.Header{}, 0, []byte("new"), time.Now()))
	assert.False(t, s.refresh(ael, a, time.Second), "replaced")
	assert.Equal(t, 2, s.Len())
}

// A response compared with the stored one as it is read counts its age
// from when it was received, also when it turns out to differ only after
// a slow read, and an unchanged one refreshes the entry from then.
func TestStaleTransportAgeFromReceipt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fail atomic.Bool
		var body atomic.Value
		body.Store("abcdef")
		base := rtFunc(func(r *http.Request) (*http.Response, error) {
			if fail.Load() {
				return nil, errors.New("dial tcp: connection refused")
			}
			b := body.Load().(string)
			return &http.Response{
				StatusCode: 200, Request: r, ContentLength: int64(len(b)),
				Header: http.Header{"Cache-Control": {"max-age=0, stale-if-error=600"}},
				Body:   io.NopCloser(&slowReader{s: b, wait: 2 * time.Second}),
			}, nil
		})
		s := &Stale{}
		rt := s.Transport(base)
		read := func() (*http.Response, string) {
			t.Helper()
			req, _ := http.NewRequest(http.MethodGet, "http://api.example/c", nil)
			resp, err := rt.RoundTrip(req)
			require.NoError(t, err)
			b, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())
			return resp, string(b)
		}
		staleAge := func() string {
			t.Helper()
			fail.Store(true)
			defer fail.Store(false)
			resp, _ := read()
			return resp.Header.Get("Age")
		}
		read() // stored when received, at 0 (read until 2 s)
		time.Sleep(8 * time.Second)
		read() // unchanged: received at 10, read until 12
		assert.Equal(t, "2", staleAge(), "refreshed from its receipt")
		time.Sleep(3 * time.Second)
		body.Store("abcXYZ")
		read() // differs in its second half: received at 15, read until 17
		time.Sleep(time.Second)
		resp, got := func() (*http.Response, string) { fail.Store(true); defer fail.Store(false); return read() }()
		assert.Equal(t, "abcXYZ", got)
		assert.Equal(t, "3", resp.Header.Get("Age"), "a changed response's age counts from its receipt")
		body.Store("abc")
		read() // shorter, found at the end: received at 18, read until 20
		assert.Equal(t, "2", staleAge())
	})
}

// slowReader returns the first half of s, then, wait later, the rest.
type slowReader struct {
	s    string
	wait time.Duration
	half bool
}

func (r *slowReader) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, io.EOF
	}
	n := len(r.s)
	if !r.half {
		r.half, n = true, max(1, len(r.s)/2)
	} else {
		time.Sleep(r.wait)
	}
	k := copy(p[:min(len(p), n)], r.s)
	r.s = r.s[k:]
	return k, nil
}

// A lone Authorization value is hashed as it is, under its own prefix:
// it never shares a scope with a set of credentials whose encoding is
// that value, and a long one (a JWT) is hashed without an allocation.
func TestCredentialScopeSingleValue(t *testing.T) {
	scope := func(h http.Header) string {
		return string(appendCredentialScope(nil, &http.Request{Header: h}))
	}
	alone := http.Header{"Authorization": {"a5:alicec3:x=1"}}
	set := http.Header{"Authorization": {"alice"}, "Cookie": {"x=1"}} // encoded as a5:alicec3:x=1
	assert.NotEqual(t, scope(alone), scope(set))
	assert.Equal(t, scope(alone), scope(http.Header{"Authorization": {"a5:alicec3:x=1"}}), "stable")
	assert.NotEqual(t, scope(alone), scope(http.Header{"Authorization": {"a5:alicec3:x=2"}}))
	assert.NotEqual(t, scope(http.Header{"Authorization": {"x"}}), scope(http.Header{"Authorization": {"x", "x"}}))
	assert.NotEqual(t, scope(http.Header{"Authorization": {""}}), scope(http.Header{}), "an empty credential is still one")
	assert.NotEqual(t, scope(http.Header{"Authorization": {"x"}}), scope(http.Header{"authorization": {"x"}}))
	assert.Empty(t, scope(http.Header{"Accept": {"x"}}))

	jwt := http.Header{"Authorization": {"Bearer " + strings.Repeat("e", 1200)}}
	r := &http.Request{Header: jwt}
	var buf [64]byte
	assert.Zero(t, testing.AllocsPerRun(10, func() { appendCredentialScope(buf[:0], r) }))
}
