package degrade

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestParseCacheControl(t *testing.T) {
	cases := []struct {
		in   string
		want cacheControl
	}{
		{"", cacheControl{maxAge: -1, sMaxAge: -1, staleIfError: -1}},
		{"max-age=60, stale-if-error=300", cacheControl{maxAge: 60, sMaxAge: -1, staleIfError: 300}},
		{`Max-Age="60" , PUBLIC`, cacheControl{public: true, maxAge: 60, sMaxAge: -1, staleIfError: -1}},
		{"no-store", cacheControl{noStore: true, maxAge: -1, sMaxAge: -1, staleIfError: -1}},
		{`private="Set-Cookie, X-A", no-cache="Foo"`, cacheControl{private: true, noCache: true, maxAge: -1, sMaxAge: -1, staleIfError: -1}},
		{`community="no-store, private", max-age=5`, cacheControl{maxAge: 5, sMaxAge: -1, staleIfError: -1}},
		{"max-age=abc", cacheControl{maxAge: 0, sMaxAge: -1, staleIfError: -1}},
		{"max-age=60, max-age=10", cacheControl{maxAge: 0, sMaxAge: -1, staleIfError: -1}},
		{"max-age=99999999999999999999", cacheControl{maxAge: maxDelta, sMaxAge: -1, staleIfError: -1}},
		{"stale-if-error=10, stale-if-error=20", cacheControl{maxAge: -1, sMaxAge: -1, staleIfError: -1}},
		{"stale-if-error=-5", cacheControl{maxAge: -1, sMaxAge: -1, staleIfError: -1}},
		{"stale-if-error", cacheControl{maxAge: -1, sMaxAge: -1, staleIfError: -1}},
		{"s-maxage=1,must-revalidate,proxy-revalidate", cacheControl{sMaxAge: 1, mustRevalidate: true, proxyRevalidate: true, maxAge: -1, staleIfError: -1}},
		{`,,, =, "x, no-store`, cacheControl{noStore: true, maxAge: -1, sMaxAge: -1, staleIfError: -1}},
		{`x="unterminated, no-store`, cacheControl{maxAge: -1, sMaxAge: -1, staleIfError: -1}},
		{`x="a\"b, no-store", public`, cacheControl{public: true, maxAge: -1, sMaxAge: -1, staleIfError: -1}},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			assert.Equal(t, tc.want, parseCacheControl([]string{tc.in}))
		})
	}
	// Several field lines combine.
	got := parseCacheControl([]string{"max-age=5", "no-store"})
	assert.True(t, got.noStore)
	assert.Equal(t, int64(5), got.maxAge)
}

func TestVaryFields(t *testing.T) {
	f, star := varyFields([]string{"accept-language, ACCEPT", " x-a ,,"})
	assert.False(t, star)
	assert.Equal(t, []string{"Accept-Language", "Accept", "X-A"}, f)
	_, star = varyFields([]string{"Accept", "*"})
	assert.True(t, star)
}

// FuzzParseCacheControl checks that no input crashes the parser, that it
// never reports a directive that is not in the input, and that it reads
// delta-seconds within bounds.
func FuzzParseCacheControl(f *testing.F) {
	for _, s := range []string{"max-age=60, stale-if-error=300", `private="a, b"`, `x="\`, "no-store", ",=,", "s-maxage=999999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cc := parseCacheControl([]string{s})
		low := strings.ToLower(s)
		if cc.noStore && !strings.Contains(low, "no-store") {
			t.Fatalf("no-store from %q", s)
		}
		if cc.private && !strings.Contains(low, "private") {
			t.Fatalf("private from %q", s)
		}
		if cc.public && !strings.Contains(low, "public") {
			t.Fatalf("public from %q", s)
		}
		for _, d := range []int64{cc.maxAge, cc.sMaxAge, cc.staleIfError} {
			if d < -1 || d > maxDelta {
				t.Fatalf("delta %d out of range from %q", d, s)
			}
		}
		_, _ = varyFields([]string{s})
		_, _ = parseDelta(s, true)
	})
}

// FuzzStoredResponse runs arbitrary response headers through the storage
// policy and the stale response built from them: no crash, and Set-Cookie
// and hop-by-hop fields never survive.
func FuzzStoredResponse(f *testing.F) {
	f.Add("max-age=5", "Accept", "10", "Mon, 02 Jan 2006 15:04:05 GMT", "close, X-A")
	f.Add("stale-if-error=99999999999999", "*", "-1", "junk", "")
	f.Fuzz(func(t *testing.T, cc, vary, age, expires, conn string) {
		h := http.Header{}
		h.Set("Cache-Control", cc)
		h.Set("Vary", vary)
		h.Set("Age", age)
		h.Set("Expires", expires)
		h.Set("Connection", conn)
		h.Set("Set-Cookie", "a=b")
		h.Set("X-A", "1")
		r, _ := http.NewRequest("GET", "https://example.com/x", nil)
		pc, ok, _ := policy(r, false, 200, h)
		if !ok {
			return
		}
		now := time.Unix(1e9, 0)
		e := newEntry("k", r, pc, 200, storedHeader(h.Clone()), ageOf(h), []byte("b"), now)
		if e.initialAge < 0 || e.lifetime < 0 {
			t.Fatalf("negative age %v or lifetime %v", e.initialAge, e.lifetime)
		}
		sh := e.staleHeader(now.Add(time.Hour), 503)
		for _, k := range []string{"Set-Cookie", "Connection"} {
			if sh.Get(k) != "" {
				t.Fatalf("%s survived", k)
			}
		}
		_ = e.usable(now.Add(time.Hour), time.Hour)
	})
}
