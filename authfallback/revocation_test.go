package authfallback

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var revT0 = time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)

func TestParseRevocationList(t *testing.T) {
	valid := []struct {
		name, doc string
		ids, subs int
	}{
		{"both", `{"jti":["a","b"],"sub":{"alice":"2026-11-25T09:00:00Z"}}`, 2, 1},
		{"jti only", `{"jti":["a"]}`, 1, 0},
		{"sub only", `{"sub":{"bob":"2026-11-25T09:00:00.5+01:00"}}`, 0, 1},
		{"explicitly empty", `{"jti":[],"sub":{}}`, 0, 0},
		{"unknown members ignored", `{"jti":[],"version":3}`, 0, 0},
	}
	for _, tc := range valid {
		t.Run(tc.name, func(t *testing.T) {
			s, err := parseRevocationList([]byte(tc.doc))
			require.NoError(t, err)
			assert.Len(t, s.jti, tc.ids)
			assert.Len(t, s.sub, tc.subs)
		})
	}
	invalid := map[string]string{
		"empty":          ``,
		"null":           `null`,
		"empty object":   `{}`,
		"null members":   `{"jti":null,"sub":null}`,
		"array":          `["a"]`,
		"html":           `<html>502</html>`,
		"empty jti":      `{"jti":[""]}`,
		"overlong jti":   `{"jti":["` + strings.Repeat("x", MaxRevocationEntryLength+1) + `"]}`,
		"empty sub":      `{"sub":{"":"2026-11-25T09:00:00Z"}}`,
		"bad time":       `{"sub":{"alice":"yesterday"}}`,
		"number time":    `{"sub":{"alice":1700000000}}`,
		"jti not string": `{"jti":[1]}`,
		"truncated":      `{"jti":["a"`,
		// Strict decoding: exact member names, no duplicates.
		"upper-case JTI":    `{"JTI":[]}`,
		"mixed-case Sub":    `{"jti":[],"Sub":{}}`,
		"jti twice":         `{"jti":["a"],"jti":[]}`,
		"subject twice":     `{"sub":{"alice":"2026-11-25T09:00:00Z","alice":"2020-01-01T00:00:00Z"}}`,
		"data after object": `{"jti":[]} {"jti":["a"]}`,
	}
	for name, doc := range invalid {
		t.Run(name, func(t *testing.T) {
			_, err := parseRevocationList([]byte(doc))
			assert.ErrorIs(t, err, ErrInvalidRevocationList)
		})
	}
	t.Run("too large", func(t *testing.T) {
		_, err := parseRevocationList(make([]byte, MaxRevocationListSize+1))
		assert.ErrorIs(t, err, ErrInvalidRevocationList)
	})
}

func TestRevokedRules(t *testing.T) {
	var m MemoryRevocations
	ok, _ := m.Revoked("alice", "x", revT0)
	assert.False(t, ok, "zero value is an empty list")

	m.RevokeID("j1")
	m.RevokeSubject("alice", revT0)

	cases := []struct {
		name     string
		sub, jti string
		iat      time.Time
		want     string
	}{
		{"revoked jti", "bob", "j1", revT0.Add(time.Hour), RevokedID},
		{"subject issued before", "alice", "j2", revT0.Add(-time.Second), RevokedSubject},
		{"subject issued at", "alice", "j2", revT0, RevokedSubject},
		{"subject without iat", "alice", "j2", time.Time{}, RevokedSubject},
		{"subject issued after", "alice", "j2", revT0.Add(time.Second), ""},
		{"other subject", "bob", "j2", revT0.Add(-time.Hour), ""},
		{"empty jti never matches", "bob", "", revT0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ok, rule := m.Revoked(tc.sub, tc.jti, tc.iat)
			assert.Equal(t, tc.want != "", ok)
			assert.Equal(t, tc.want, rule)
		})
	}

	m.Remove("alice", "j1")
	ok, _ = m.Revoked("alice", "j1", revT0.Add(-time.Hour))
	assert.False(t, ok, "revocations lifted")
}

func TestMemoryRevocationsConcurrentWrites(t *testing.T) {
	var m MemoryRevocations
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() { m.RevokeID(fmt.Sprint(i)) })
		wg.Go(func() { m.Revoked("s", fmt.Sprint(i), revT0) })
	}
	wg.Wait()
	for i := range 50 {
		ok, _ := m.Revoked("", fmt.Sprint(i), revT0)
		assert.True(t, ok, "write %d lost", i)
	}
}

// revServer serves the revocation list held in doc; status 0 means 200.
type revServer struct {
	mu     sync.Mutex
	doc    string
	status int
	etag   string
	hits   atomic.Int32
	n304   atomic.Int32
}

func (s *revServer) set(status int, doc string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.doc = status, doc
}

func (s *revServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	s.mu.Lock()
	st, doc, etag := s.status, s.doc, s.etag
	s.mu.Unlock()
	if etag != "" {
		if r.Header.Get("If-None-Match") == etag {
			s.n304.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", etag)
	}
	if st == 0 {
		st = 200
	}
	w.WriteHeader(st)
	io.WriteString(w, doc)
}

// revRoundTripper serves a revServer without the network (for synctest).
type revRoundTripper struct{ s *revServer }

func (rt revRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	rt.s.ServeHTTP(rec, r)
	return rec.Result(), nil
}

func TestRevocationListEndToEnd(t *testing.T) {
	srv := &revServer{doc: `{"jti":["j1"],"sub":{"alice":"2026-11-25T09:00:00Z"}}`}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	file := filepath.Join(t.TempDir(), "revoked.json")

	var mu sync.Mutex
	var events []RevocationEvent
	l, err := NewRevocationList(RevocationListConfig{
		URL: ts.URL, CacheFile: file, RefreshInterval: time.Hour,
		OnRevocation: func(e RevocationEvent) { mu.Lock(); events = append(events, e); mu.Unlock() },
	})
	require.NoError(t, err)
	defer l.Close()
	require.NoError(t, l.Refresh(context.Background()))

	ok, rule := l.Revoked("bob", "j1", revT0)
	assert.True(t, ok)
	assert.Equal(t, RevokedID, rule)
	ok, _ = l.Revoked("alice", "j9", revT0.Add(-time.Minute))
	assert.True(t, ok)
	st := l.Status()
	assert.True(t, st.Loaded)
	assert.Equal(t, 1, st.IDs)
	assert.Equal(t, 1, st.Subjects)
	assert.NoError(t, st.LastError)

	// The cache file is private and holds the list.
	fi, err := os.Stat(file)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	// Each revocation fires once, however many fetches see it.
	require.NoError(t, l.Refresh(context.Background()))
	mu.Lock()
	assert.ElementsMatch(t, []RevocationEvent{{ID: "j1"}, {Subject: "alice", RevokedBefore: revT0}}, events)
	events = nil
	mu.Unlock()

	// A bad document never replaces the last good list.
	for _, bad := range []struct {
		status int
		doc    string
	}{{200, `{}`}, {200, `null`}, {200, `<html>`}, {500, `{"jti":[]}`}, {200, `{"jti":[""]}`}} {
		srv.set(bad.status, bad.doc)
		assert.Error(t, l.Refresh(context.Background()), "%d %s", bad.status, bad.doc)
		ok, _ := l.Revoked("bob", "j1", revT0)
		assert.True(t, ok, "list kept after %d %s", bad.status, bad.doc)
	}
	st = l.Status()
	assert.Error(t, st.LastError)
	assert.GreaterOrEqual(t, st.Failures, 5)
	assert.False(t, st.FailingSince.IsZero())

	// A restart during the outage enforces the cached list at once.
	l2, err := NewRevocationList(RevocationListConfig{CacheFile: file})
	require.NoError(t, err)
	ok, _ = l2.Revoked("bob", "j1", revT0)
	assert.True(t, ok, "loaded from the cache file")
	assert.True(t, l2.Status().Loaded)
	require.NoError(t, l2.Close())

	// A new revocation fires the hook; an explicitly empty list lifts all.
	srv.set(200, `{"jti":["j1","j2"],"sub":{"alice":"2026-11-25T10:00:00Z"}}`)
	require.NoError(t, l.Refresh(context.Background()))
	mu.Lock()
	assert.ElementsMatch(t, []RevocationEvent{{ID: "j2"}, {Subject: "alice", RevokedBefore: revT0.Add(time.Hour)}}, events)
	mu.Unlock()
	srv.set(200, `{"jti":[],"sub":{}}`)
	require.NoError(t, l.Refresh(context.Background()))
	ok, _ = l.Revoked("bob", "j1", revT0)
	assert.False(t, ok, "an empty valid list is a list")
	assert.Zero(t, l.Status().Failures)
}

func TestRevocationListPollsWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &revServer{status: 503}
		var fails atomic.Int32
		l, err := NewRevocationList(RevocationListConfig{
			URL:             "https://revocations.test/list",
			HTTPClient:      &http.Client{Transport: revRoundTripper{srv}},
			RefreshInterval: time.Minute,
			OnRefreshError: func(e RefreshErrorEvent) {
				fails.Add(1)
				assert.LessOrEqual(t, e.Retry, time.Minute)
			},
		})
		require.NoError(t, err)
		defer l.Close()
		synctest.Wait()
		require.Equal(t, int32(1), srv.hits.Load(), "first fetch at once")
		assert.False(t, l.Status().Loaded)

		// Backoff: 1 s base doubling with jitter, capped at the interval:
		// within 10 minutes far fewer than one fetch per second, yet more
		// than one per interval.
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		h := srv.hits.Load()
		assert.Greater(t, h, int32(10))
		assert.Less(t, h, int32(30))
		assert.Equal(t, h, fails.Load())

		srv.set(200, `{"jti":["x"]}`)
		time.Sleep(time.Minute + time.Second)
		synctest.Wait()
		ok, _ := l.Revoked("", "x", time.Now())
		assert.True(t, ok, "recovered on the next poll")
		h = srv.hits.Load()
		time.Sleep(5*time.Minute + time.Second)
		synctest.Wait()
		// 5 or 6: the first fetch after recovery may fall within a second
		// of srv.set, so one more interval fits in the 5m1s.
		assert.InDelta(t, h+5, srv.hits.Load(), 1, "one fetch per RefreshInterval once healthy")
	})
}

// The first fetch's events are delivered on the refresh goroutine; a
// Refresh made before they were must deliver its own after them.
func TestRevocationListEventOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &revServer{doc: `{"jti":["j1"]}`}
		var mu sync.Mutex
		var got []string
		l, err := NewRevocationList(RevocationListConfig{
			URL:             "https://revocations.test/list",
			HTTPClient:      &http.Client{Transport: revRoundTripper{srv}},
			RefreshInterval: time.Hour,
			OnRevocation: func(ev RevocationEvent) {
				if ev.ID == "j1" {
					time.Sleep(10 * time.Millisecond) // a slow hook
				}
				mu.Lock()
				got = append(got, ev.ID)
				mu.Unlock()
			},
		})
		require.NoError(t, err)
		defer l.Close()
		srv.set(200, `{"jti":["j1","j2"]}`)
		require.NoError(t, l.Refresh(context.Background()))
		mu.Lock()
		defer mu.Unlock()
		assert.Equal(t, []string{"j1", "j2"}, got, "in fetch order, all delivered when Refresh returns")
	})
}

func TestRevocationListETag(t *testing.T) {
	srv := &revServer{doc: `{"jti":["j1"]}`, etag: `"v1"`}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	var events atomic.Int32
	l, err := NewRevocationList(RevocationListConfig{
		URL: ts.URL, RefreshInterval: time.Hour,
		OnRevocation: func(RevocationEvent) { events.Add(1) },
	})
	require.NoError(t, err)
	defer l.Close()
	require.NoError(t, l.Refresh(context.Background()))
	require.NoError(t, l.Refresh(context.Background()))
	assert.Positive(t, srv.n304.Load(), "If-None-Match sent")
	ok, _ := l.Revoked("", "j1", revT0)
	assert.True(t, ok, "304 keeps the list")
	assert.Equal(t, int32(1), events.Load())

	srv.mu.Lock()
	srv.doc, srv.etag = `{"jti":["j1","j2"]}`, `"v2"`
	srv.mu.Unlock()
	require.NoError(t, l.Refresh(context.Background()))
	ok, _ = l.Revoked("", "j2", revT0)
	assert.True(t, ok, "new version fetched")
	assert.Equal(t, int32(2), events.Load())
}

func TestRevocationCacheFileRefused(t *testing.T) {
	now := revT0
	good, err := json.Marshal(revCacheDoc{Version: 1, FetchedAt: now, List: json.RawMessage(`{"jti":["a"]}`)})
	require.NoError(t, err)
	_, _, err = revParseCacheFile(good, now)
	require.NoError(t, err)
	for name, doc := range map[string]string{
		"version":    `{"version":2,"fetched_at":"2026-11-25T09:00:00Z","list":{"jti":[]}}`,
		"future":     `{"version":1,"fetched_at":"2026-11-25T10:00:00Z","list":{"jti":[]}}`,
		"no time":    `{"version":1,"list":{"jti":[]}}`,
		"bad list":   `{"version":1,"fetched_at":"2026-11-25T09:00:00Z","list":{}}`,
		"not json":   `garbage`,
		"list array": `{"version":1,"fetched_at":"2026-11-25T09:00:00Z","list":[]}`,
	} {
		_, _, err := revParseCacheFile([]byte(doc), now)
		assert.Error(t, err, name)
	}

	// NewRevocationList ignores a bad file instead of failing.
	file := filepath.Join(t.TempDir(), "r.json")
	require.NoError(t, os.WriteFile(file, []byte(`{}`), 0o600))
	l, err := NewRevocationList(RevocationListConfig{CacheFile: file})
	require.NoError(t, err)
	assert.False(t, l.Status().Loaded)
	l.Close()

	_, err = NewRevocationList(RevocationListConfig{})
	assert.Error(t, err)
}

func FuzzParseRevocationList(f *testing.F) {
	f.Add([]byte(`{"jti":["a","b"],"sub":{"alice":"2026-11-25T09:00:00Z"}}`))
	f.Add([]byte(`{"jti":[],"sub":{}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"sub":{"a":"2026-11-25T09:00:00.123456789+14:00"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseRevocationList(b)
		if err != nil {
			return
		}
		// A valid list survives the cache file round trip unchanged.
		s2, err := parseRevocationList(s.marshal())
		if err != nil {
			t.Fatalf("canonical form refused: %v", err)
		}
		if len(s2.jti) != len(s.jti) || len(s2.sub) != len(s.sub) {
			t.Fatalf("round trip changed the list")
		}
		for k, v := range s.sub {
			if !s2.sub[k].Equal(v) {
				t.Fatalf("round trip changed %q", k)
			}
		}
	})
}

func FuzzRevocationCacheFile(f *testing.F) {
	f.Add([]byte(`{"version":1,"fetched_at":"2026-11-25T09:00:00Z","list":{"jti":["a"]}}`))
	f.Add([]byte(`{"version":1,"fetched_at":"2026-11-25T09:00:00Z","list":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, at, err := revParseCacheFile(b, revT0)
		if err != nil {
			return
		}
		if s == nil || at.IsZero() || at.After(revT0.Add(revMaxClockSkew)) {
			t.Fatalf("accepted an invalid cache file")
		}
	})
}

func revBenchList(n int) *MemoryRevocations {
	s := &revSnapshot{jti: make(map[string]struct{}, n), sub: make(map[string]time.Time, n)}
	for i := range n {
		s.jti[fmt.Sprintf("jti-%08d-%s", i, strings.Repeat("x", 16))] = struct{}{}
		s.sub[fmt.Sprintf("user-%d", i)] = revT0
	}
	m := &MemoryRevocations{}
	m.snap.Store(s)
	return m
}

// BenchmarkRevoked measures Revoked on a list of 10k IDs and 10k subjects;
// the baseline is an empty list (a nil snapshot check).
func BenchmarkRevoked(b *testing.B) {
	hitJTI := fmt.Sprintf("jti-%08d-%s", 4242, strings.Repeat("x", 16))
	missJTI := "jti-99999999-" + strings.Repeat("y", 16)
	full := revBenchList(10000)
	var empty MemoryRevocations
	for _, bc := range []struct {
		name     string
		r        Revocations
		sub, jti string
	}{
		{"baseline-empty", &empty, "user-42", missJTI},
		{"hit-jti-10k", full, "nobody", hitJTI},
		{"hit-sub-10k", full, "user-42", missJTI},
		{"miss-10k", full, "nobody", missJTI},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			iat := revT0.Add(-time.Minute)
			for b.Loop() {
				bc.r.Revoked(bc.sub, bc.jti, iat)
			}
		})
	}
}

// A revocation list never loaded, or older than its MaxStaleness, does not
// fail open silently: Results are degraded (ReasonRevocationsStale) and
// narrowed by the fallback policy until a fresh list is in use.
func TestStaleRevocationListDegrades(t *testing.T) {
	idp := edIdP(t)
	var up atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte(`{"jti":["gone"]}`))
	}))
	defer srv.Close()
	rl, err := NewRevocationList(RevocationListConfig{URL: srv.URL, RefreshInterval: time.Hour})
	require.NoError(t, err)
	defer rl.Close()
	v, _, _ := policyVerifier(t, idp, func(c *Config) { c.Revocations = rl })
	tok := idp.Issue(jwt.MapClaims{"scope": "orders:read orders:write"})

	require.Error(t, rl.Refresh(context.Background()))
	assert.True(t, rl.Stale(), "never loaded")
	res, err := v.Verify(context.Background(), tok)
	require.NoError(t, err)
	assert.True(t, res.Degraded)
	assert.Equal(t, ReasonRevocationsStale, res.Reason)
	assert.Equal(t, []string{"orders:read"}, res.Scopes, "narrowed by the policy")
	assert.Equal(t, ReasonRevocationsStale, v.Status().Reason)

	up.Store(true)
	require.NoError(t, rl.Refresh(context.Background()))
	assert.False(t, rl.Stale())
	res, err = v.Verify(context.Background(), tok)
	require.NoError(t, err)
	assert.False(t, res.Degraded, "fresh list")

	// A list loaded from a cache file older than MaxStaleness is stale.
	file := filepath.Join(t.TempDir(), "rev.json")
	at := time.Now().Add(-2 * time.Hour).UTC().Format(time.RFC3339Nano)
	require.NoError(t, os.WriteFile(file, []byte(`{"version":1,"fetched_at":"`+at+`","list":{"jti":["a"]}}`), 0o600))
	old, err := NewRevocationList(RevocationListConfig{CacheFile: file, MaxStaleness: time.Hour})
	require.NoError(t, err)
	defer old.Close()
	require.True(t, old.Status().Loaded)
	assert.True(t, old.Stale())
	fresh, err := NewRevocationList(RevocationListConfig{CacheFile: file, MaxStaleness: 3 * time.Hour})
	require.NoError(t, err)
	defer fresh.Close()
	assert.False(t, fresh.Stale())
}

// A list without a cache file is fetched before NewRevocationList returns,
// so a service does not start with every Result marked revocations-stale.
func TestRevocationListFirstFetchBeforeReturn(t *testing.T) {
	srv := &revServer{doc: `{"jti":["j1"],"sub":{}}`}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	l, err := NewRevocationList(RevocationListConfig{URL: ts.URL, RefreshInterval: time.Hour})
	require.NoError(t, err)
	defer l.Close()
	assert.False(t, l.Stale(), "fresh from the first fetch")
	ok, _ := l.Revoked("bob", "j1", revT0)
	assert.True(t, ok)

	// An endpoint that is down does not hold the constructor: the list is
	// stale (degraded) and the loop retries.
	ts.Close()
	l2, err := NewRevocationList(RevocationListConfig{URL: ts.URL, RefreshInterval: time.Hour})
	require.NoError(t, err)
	defer l2.Close()
	assert.True(t, l2.Stale())
}
