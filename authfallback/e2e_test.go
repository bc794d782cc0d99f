package authfallback_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
)

func TestNormal(t *testing.T) {
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			idp := newIdP(t, alg)
			h := newHarness(t, idp, nil)
			tok := idp.Issue(jwt.MapClaims{"sub": "alice", "scope": "orders:read orders:write", "jti": "j1"})

			rec, res := h.serve(tok)
			require.Equal(t, http.StatusNoContent, rec.Code)
			require.NotNil(t, res)
			assert.Equal(t, "alice", res.Subject)
			assert.Equal(t, []string{"orders:read", "orders:write"}, res.Scopes)
			assert.True(t, res.HasScope("orders:write"))
			assert.Equal(t, idp.Issuer(), res.Issuer)
			assert.Equal(t, idp.KeyID(), res.KeyID)
			assert.Equal(t, "j1", res.ID)
			sum := sha256.Sum256([]byte(tok))
			assert.Equal(t, hex.EncodeToString(sum[:]), res.TokenHash)
			assert.WithinDuration(t, time.Now().Add(time.Hour), res.ExpiresAt, time.Minute)
			assert.False(t, res.Degraded)
			assert.Empty(t, res.Reason)
			assert.Empty(t, rec.Header().Get("Holdfast-Degraded"))

			st := h.v.Status()
			assert.False(t, st.Fallback)
			assert.Equal(t, 1, st.KeyCount)
			assert.Equal(t, idp.JWKSURL(), st.Source)
			assert.NoError(t, st.LastError)
			assert.Less(t, st.KeyAge, time.Minute)
		})
	}
}

func TestScpArrayScopes(t *testing.T) {
	idp := newIdP(t, "EdDSA")
	h := newHarness(t, idp, nil)
	res, err := h.verify(idp.Issue(jwt.MapClaims{"scp": []string{"a", "b"}}))
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, res.Scopes)
}

func TestOutageModes(t *testing.T) {
	cases := []struct {
		name   string
		break_ func(*authtest.Server)
		reason string
	}{
		{"down", func(s *authtest.Server) { s.SetDown(true) }, authfallback.ReasonJWKSUnreachable},
		{"5xx", func(s *authtest.Server) { s.SetFail5xx(true) }, authfallback.ReasonJWKSUnreachable},
		{"slow", func(s *authtest.Server) { s.SetSlow(5 * time.Second) }, authfallback.ReasonJWKSUnreachable},
		{"empty key set", func(s *authtest.Server) { s.SetEmptyKeySet(true) }, authfallback.ReasonJWKSInvalid},
		{"garbage", func(s *authtest.Server) { s.SetGarbage(true) }, authfallback.ReasonJWKSInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			idp := newIdP(t, "ES256")
			var enter, exit, refreshErrs atomic.Int32
			var exitEv authfallback.FallbackEvent
			var mu sync.Mutex
			h := newHarness(t, idp, func(c *authfallback.Config) {
				c.FetchTimeout = 200 * time.Millisecond
				c.OnFallbackEnter = func(ev authfallback.FallbackEvent) {
					enter.Add(1)
					assert.Equal(t, tc.reason, ev.Reason)
					assert.Error(t, ev.Err)
				}
				c.OnFallbackExit = func(ev authfallback.FallbackEvent) {
					exit.Add(1)
					mu.Lock()
					exitEv = ev
					mu.Unlock()
				}
				c.OnRefreshError = func(ev authfallback.RefreshErrorEvent) {
					assert.Equal(t, int(refreshErrs.Add(1)), ev.Attempt)
					assert.Positive(t, ev.Retry)
				}
			})
			tok := idp.Issue(jwt.MapClaims{"sub": "bob"})
			fresh := idp.Issue(nil) // never seen before the outage

			tc.break_(idp)
			require.Error(t, h.v.Refresh(context.Background()))
			require.Error(t, h.v.Refresh(context.Background()))
			assert.EqualValues(t, 1, enter.Load(), "fallback entered once")
			assert.EqualValues(t, 2, refreshErrs.Load())

			st := h.v.Status()
			assert.True(t, st.Fallback)
			assert.Equal(t, tc.reason, st.Reason)
			assert.False(t, st.FallbackSince.IsZero())
			assert.Equal(t, 1, st.KeyCount, "last-known-good set kept")
			assert.Equal(t, 2, st.Failures)
			assert.Error(t, st.LastError)

			for _, tk := range []string{tok, fresh} {
				rec, res := h.serve(tk)
				require.Equal(t, http.StatusNoContent, rec.Code, rec.Body.String())
				require.NotNil(t, res)
				assert.True(t, res.Degraded)
				assert.Equal(t, tc.reason, res.Reason)
				assert.Equal(t, tc.reason, rec.Header().Get("Holdfast-Degraded"))
			}
			logs := h.audit.String()
			assert.Contains(t, logs, "fallback mode enter")
			assert.Contains(t, logs, "degraded acceptance")
			assert.Contains(t, logs, tokenHash(tok))
			assert.NotContains(t, logs, tok, "raw token never logged")
			assert.NotContains(t, logs, strings.Split(tok, ".")[2], "signature never logged")

			idp.Reset()
			require.NoError(t, h.v.Refresh(context.Background()))
			assert.EqualValues(t, 1, exit.Load())
			mu.Lock()
			assert.Equal(t, tc.reason, exitEv.Reason)
			assert.Positive(t, exitEv.Duration)
			mu.Unlock()
			assert.False(t, h.v.Status().Fallback)
			rec, res := h.serve(tok)
			require.Equal(t, http.StatusNoContent, rec.Code)
			assert.False(t, res.Degraded)
			assert.Empty(t, rec.Header().Get("Holdfast-Degraded"))
			assert.Contains(t, h.audit.String(), "fallback mode exit")
		})
	}
}

func tokenHash(tok string) string {
	s := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(s[:])
}

func TestDisableDegradedHeader(t *testing.T) {
	idp := newIdP(t, "EdDSA")
	h := newHarness(t, idp, func(c *authfallback.Config) { c.DisableDegradedHeader = true })
	idp.SetFail5xx(true)
	require.Error(t, h.v.Refresh(context.Background()))
	rec, res := h.serve(idp.Issue(nil))
	require.Equal(t, http.StatusNoContent, rec.Code)
	assert.True(t, res.Degraded)
	assert.Empty(t, rec.Header().Get("Holdfast-Degraded"))
}

func TestRestartDuringOutageFromCacheFile(t *testing.T) {
	idp := newIdP(t, "RS256")
	file := filepath.Join(t.TempDir(), "jwks.json")
	h1 := newHarness(t, idp, func(c *authfallback.Config) { c.CacheFile = file })
	tok := idp.Issue(nil)
	_, err := h1.verify(tok)
	require.NoError(t, err)
	require.NoError(t, h1.v.Close())

	fi, err := os.Stat(file)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	entries, err := os.ReadDir(filepath.Dir(file))
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary files left behind")
	raw, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.Contains(t, string(raw), idp.KeyID())
	assert.NotContains(t, string(raw), `"d"`, "no private key material")

	idp.SetDown(true)
	hits := idp.JWKSHits()
	h2 := newHarness(t, idp, func(c *authfallback.Config) { c.CacheFile = file })
	res, err := h2.verify(tok) // at once, from the cache file
	require.NoError(t, err)
	assert.Equal(t, "test-subject", res.Subject)
	require.Error(t, h2.v.Refresh(context.Background()))
	res, err = h2.verify(tok)
	require.NoError(t, err)
	assert.True(t, res.Degraded)
	assert.Equal(t, authfallback.ReasonJWKSUnreachable, res.Reason)
	assert.Equal(t, hits, idp.JWKSHits(), "down: nothing reached the IdP")
	st := h2.v.Status()
	assert.Equal(t, idp.JWKSURL(), st.Source)
	assert.Equal(t, 1, st.KeyCount)
}

func TestCacheFileRefused(t *testing.T) {
	idp := newIdP(t, "EdDSA")
	idp.SetDown(true)
	dir := t.TempDir()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	for name, content := range map[string]string{
		"garbage":    "not json",
		"empty set":  `{"version":2,"issuer":"` + idp.Issuer() + `","jwks_urls":["` + idp.JWKSURL() + `"],"fetched_at":"2026-01-01T00:00:00Z","jwks":{"keys":[]}}`,
		"future":     `{"version":2,"issuer":"` + idp.Issuer() + `","jwks_urls":["` + idp.JWKSURL() + `"],"fetched_at":"2999-01-01T00:00:00Z","jwks":` + string(idp.JWKS()) + `}`,
		"no version": `{"fetched_at":"2026-01-01T00:00:00Z","jwks":` + string(idp.JWKS()) + `}`,
		// A file not tied to this issuer: another IdP's keys must not
		// verify tokens claiming this issuer.
		"version 1 (no issuer)": `{"version":1,"fetched_at":"` + now + `","jwks":` + string(idp.JWKS()) + `}`,
		"no issuer":             `{"version":2,"jwks_urls":["` + idp.JWKSURL() + `"],"fetched_at":"` + now + `","jwks":` + string(idp.JWKS()) + `}`,
		"other issuer":          `{"version":2,"issuer":"https://idp-a.example/","jwks_urls":["` + idp.JWKSURL() + `"],"fetched_at":"` + now + `","jwks":` + string(idp.JWKS()) + `}`,
		"other JWKS URLs":       `{"version":2,"issuer":"` + idp.Issuer() + `","jwks_urls":["https://idp-a.example/jwks"],"fetched_at":"` + now + `","jwks":` + string(idp.JWKS()) + `}`,
	} {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
			require.NoError(t, os.WriteFile(file, []byte(content), 0o600))
			h := newHarness(t, idp, func(c *authfallback.Config) { c.CacheFile = file })
			_, err := h.verify(idp.Issue(nil))
			assert.ErrorIs(t, err, authfallback.ErrNoKeys)
			assert.Contains(t, h.audit.String(), "cache file refused")
		})
	}
}

func TestMaxStalenessFromCacheFile(t *testing.T) {
	idp := newIdP(t, "ES256")
	file := filepath.Join(t.TempDir(), "jwks.json")
	old := time.Now().Add(-25 * time.Hour).UTC().Format(time.RFC3339Nano)
	require.NoError(t, os.WriteFile(file, []byte(`{"version":2,"issuer":"`+idp.Issuer()+`","jwks_urls":["`+idp.JWKSURL()+`"],"fetched_at":"`+old+`","jwks":`+string(idp.JWKS())+`}`), 0o600))
	idp.SetDown(true)
	h := newHarness(t, idp, func(c *authfallback.Config) { c.CacheFile = file })
	tok := idp.Issue(nil)
	_, err := h.verify(tok)
	require.ErrorIs(t, err, authfallback.ErrKeysTooStale)
	assert.ErrorIs(t, err, authfallback.ErrUnavailable)
	rec, _ := h.serve(tok)
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	assert.NotEmpty(t, rec.Header().Get("Retry-After"))
	assert.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"))
	assert.True(t, h.v.Status().Stale)

	// A longer MaxStaleness trusts the same keys, degraded.
	h2 := newHarness(t, idp, func(c *authfallback.Config) {
		c.CacheFile = file
		c.MaxStaleness = 48 * time.Hour
		c.Policy.MaxOfflineDuration = 72 * time.Hour
	})
	require.Error(t, h2.v.Refresh(context.Background()))
	res, err := h2.verify(tok)
	require.NoError(t, err)
	assert.True(t, res.Degraded)
}

func TestAlternateURL(t *testing.T) {
	idp := newIdP(t, "EdDSA")
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusBadGateway)
	}))
	defer broken.Close()
	h := newHarness(t, idp, func(c *authfallback.Config) {
		c.JWKSURLs = []string{broken.URL + "/jwks", idp.JWKSURL()}
	})
	res, err := h.verify(idp.Issue(nil))
	require.NoError(t, err)
	assert.False(t, res.Degraded, "an alternate that answers is not an outage")
	st := h.v.Status()
	assert.Equal(t, idp.JWKSURL(), st.Source)
	assert.False(t, st.Fallback)
}

func TestNoKeysAtAll(t *testing.T) {
	idp := newIdP(t, "RS256")
	idp.SetDown(true)
	var entered atomic.Int32
	h := newHarness(t, idp, func(c *authfallback.Config) {
		c.OnFallbackEnter = func(authfallback.FallbackEvent) { entered.Add(1) }
	})
	tok := idp.Issue(nil)
	_, err := h.verify(tok)
	require.ErrorIs(t, err, authfallback.ErrNoKeys)
	rec, res := h.serve(tok)
	assert.Nil(t, res)
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	assert.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"))
	assert.NotEmpty(t, rec.Header().Get("Retry-After"))
	assert.Empty(t, rec.Header().Get("WWW-Authenticate"), "the token is not at fault")
	var p map[string]any
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &p))
	assert.EqualValues(t, 503, p["status"])
	assert.Contains(t, p["type"], "authentication-unavailable")
	// The first fetch's hooks run after New returned, on the refresh
	// goroutine.
	assert.Eventually(t, func() bool { return entered.Load() == 1 }, 5*time.Second, 5*time.Millisecond)
	st := h.v.Status()
	assert.True(t, st.Stale)
	assert.Zero(t, st.KeyCount)

	idp.SetDown(false)
	require.NoError(t, h.v.Refresh(context.Background()))
	rec, res = h.serve(tok)
	assert.Equal(t, http.StatusNoContent, rec.Code)
	require.NotNil(t, res)
	assert.False(t, res.Degraded)
}

func TestMissingToken(t *testing.T) {
	idp := newIdP(t, "EdDSA")
	h := newHarness(t, idp, func(c *authfallback.Config) { c.Realm = "api" })
	rec, res := h.serve("")
	assert.Nil(t, res)
	assert.Equal(t, http.StatusUnauthorized, rec.Code)
	assert.Equal(t, `Bearer realm="api"`, rec.Header().Get("WWW-Authenticate"))
	assert.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"))
	rec, _ = h.serve("bad")
	assert.Equal(t, `Bearer realm="api", error="invalid_token"`, rec.Header().Get("WWW-Authenticate"))
}

func TestErrorHandlerOverride(t *testing.T) {
	idp := newIdP(t, "EdDSA")
	var got error
	h := newHarness(t, idp, func(c *authfallback.Config) {
		c.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
			got = err
			w.WriteHeader(http.StatusTeapot)
		}
	})
	rec, _ := h.serve("garbage")
	assert.Equal(t, http.StatusTeapot, rec.Code)
	assert.ErrorIs(t, got, authfallback.ErrInvalidToken)
}

func TestRestartWithOldCacheFileIsDegradedAtOnce(t *testing.T) {
	idp := newIdP(t, "EdDSA")
	dir := t.TempDir()
	write := func(name string, age time.Duration) string {
		file := filepath.Join(dir, name)
		at := time.Now().Add(-age).UTC().Format(time.RFC3339Nano)
		require.NoError(t, os.WriteFile(file, []byte(`{"version":2,"issuer":"`+idp.Issuer()+`","jwks_urls":["`+idp.JWKSURL()+`"],"fetched_at":"`+at+`","jwks":`+string(idp.JWKS())+`}`), 0o600))
		return file
	}
	old, older, fresh := write("old.json", 20*time.Minute), write("older.json", time.Hour), write("fresh.json", time.Minute)
	idp.SetSlow(10 * time.Second) // the first fetch hangs
	tok := idp.Issue(jwt.MapClaims{"scope": "orders:read orders:write"})
	policy := authfallback.Policy{AllowedScopes: []string{"orders:read"}}

	// Keys older than RefreshInterval, unconfirmed: fallback for the
	// policy (narrowed scopes, a deadline), though no refresh failed yet.
	h := newHarness(t, idp, func(c *authfallback.Config) {
		c.CacheFile = old
		c.FetchTimeout = 10 * time.Second
		c.Policy = policy
	})
	res, err := h.verify(tok)
	require.NoError(t, err)
	assert.True(t, res.Degraded, "20-minute-old keys not yet confirmed by the IdP")
	assert.Equal(t, authfallback.ReasonJWKSStale, res.Reason)
	assert.Equal(t, []string{"orders:read"}, res.Scopes, "the fallback policy narrows")
	assert.Equal(t, []string{"orders:write"}, res.RemovedScopes)
	st := h.v.Status()
	assert.True(t, st.Degraded)
	assert.False(t, st.Fallback)
	assert.WithinDuration(t, time.Now().Add(-20*time.Minute+5*time.Minute+30*time.Minute), st.FallbackDeadline, 5*time.Second,
		"MaxOfflineDuration runs from fetched_at + RefreshInterval")

	// An hour-old set: MaxOfflineDuration has passed since it was due.
	h1 := newHarness(t, idp, func(c *authfallback.Config) {
		c.CacheFile = older
		c.FetchTimeout = 10 * time.Second
		c.Policy = policy
	})
	_, err = h1.verify(tok)
	assert.ErrorIs(t, err, authfallback.ErrFallbackExpired)

	// A fresh cache file (younger than RefreshInterval): not degraded.
	h2 := newHarness(t, idp, func(c *authfallback.Config) {
		c.CacheFile = fresh
		c.FetchTimeout = 10 * time.Second
		c.Policy = policy
	})
	res, err = h2.verify(tok)
	require.NoError(t, err)
	assert.False(t, res.Degraded)
	assert.Equal(t, []string{"orders:read", "orders:write"}, res.Scopes)
	idp.SetSlow(0)
}

func TestCacheFileWritableByOthersRefused(t *testing.T) {
	idp := newIdP(t, "EdDSA")
	file := filepath.Join(t.TempDir(), "jwks.json")
	at := time.Now().UTC().Format(time.RFC3339Nano)
	require.NoError(t, os.WriteFile(file, []byte(`{"version":2,"issuer":"`+idp.Issuer()+`","jwks_urls":["`+idp.JWKSURL()+`"],"fetched_at":"`+at+`","jwks":`+string(idp.JWKS())+`}`), 0o600))
	require.NoError(t, os.Chmod(file, 0o666))
	idp.SetDown(true)
	h := newHarness(t, idp, func(c *authfallback.Config) { c.CacheFile = file })
	_, err := h.verify(idp.Issue(nil))
	assert.ErrorIs(t, err, authfallback.ErrNoKeys)
	assert.Contains(t, h.audit.String(), "writable by group or others")
}
