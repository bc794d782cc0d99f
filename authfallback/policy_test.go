package authfallback

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"github.com/holdfast-go/holdfast/internal/caller"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback/authtest"
)

// policyVerifier returns a Verifier against idp served in-process (usable
// in a synctest bubble), with an offline issuer allowed "orders:read".
func policyVerifier(t *testing.T, idp *authtest.Server, mod func(*Config)) (*Verifier, *OfflineIssuer, *lockedBuf) {
	t.Helper()
	audit := &lockedBuf{}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	o, err := NewOfflineIssuer(OfflineConfig{
		Issuer: "https://api.test/offline", Audience: []string{idp.Audience()}, Key: key, KeyID: "off-1",
		TTL: 10 * time.Minute, AllowedScopes: []string{"orders:read"}, AuditLog: slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	cfg := Config{
		Issuer: idp.Issuer(), Audience: []string{idp.Audience()}, JWKSURLs: []string{idp.JWKSURL()},
		HTTPClient: &http.Client{Transport: idp.InProcessTransport()},
		Policy:     Policy{AllowedScopes: []string{"orders:read"}},
		Offline:    o,
		AuditLog:   slog.New(slog.NewJSONHandler(audit, nil)),
	}
	if mod != nil {
		mod(&cfg)
	}
	v, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = v.Close() })
	return v, o, audit
}

// down takes idp down and makes v notice (fallback mode).
func down(t *testing.T, v *Verifier, idp *authtest.Server) {
	t.Helper()
	idp.SetDown(true)
	require.Error(t, v.Refresh(context.Background()))
	require.True(t, v.Status().Fallback)
}

func edIdP(t *testing.T) *authtest.Server {
	idp := authtest.NewWithConfig(authtest.Config{Algorithm: "EdDSA"})
	t.Cleanup(idp.Close)
	return idp
}

// signOffline signs claims (over valid defaults) with key under kid.
func signOffline(t *testing.T, key ed25519.PrivateKey, kid string, idp *authtest.Server, claims jwt.MapClaims) string {
	now := time.Now()
	c := jwt.MapClaims{
		"iss": "https://api.test/offline", "aud": idp.Audience(), "sub": "alice", "jti": "j1",
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "scope": "orders:read",
		ClaimPrimaryIssuer: idp.Issuer(),
	}
	for k, v := range claims {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	tk := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	tk.Header["kid"] = kid
	s, err := tk.SignedString(key)
	require.NoError(t, err)
	return s
}

func TestOfflineTokenSecurity(t *testing.T) {
	idp := edIdP(t)
	synctest.Test(t, func(t *testing.T) {
		v, o, _ := policyVerifier(t, idp, nil)
		key := o.ring.Load().cur.priv
		good := signOffline(t, key, "off-1", idp, nil)

		// Outside the policy window: the IdP is up.
		_, err := v.Verify(context.Background(), good)
		assert.ErrorIs(t, err, ErrOutsidePolicy, "not in fallback mode")
		assert.ErrorIs(t, err, ErrInvalidToken)

		down(t, v, idp)
		res, err := v.Verify(context.Background(), good)
		require.NoError(t, err, "the baseline is accepted in fallback mode")
		assert.Equal(t, ReasonOfflineToken, res.Reason)
		assert.True(t, res.Degraded)

		_, other, err := ed25519.GenerateKey(rand.Reader)
		require.NoError(t, err)
		now := time.Now()
		for name, tok := range map[string]string{
			"wider scope":      signOffline(t, key, "off-1", idp, jwt.MapClaims{"scope": "orders:read orders:write"}),
			"longer TTL":       signOffline(t, key, "off-1", idp, jwt.MapClaims{"exp": now.Add(10*time.Minute + time.Second).Unix()}),
			"TTL over maximum": signOffline(t, key, "off-1", idp, jwt.MapClaims{"iat": now.Add(-time.Hour).Unix(), "exp": now.Add(time.Hour).Unix()}),
			"unknown key":      signOffline(t, other, "off-1", idp, nil),
			"IdP issuer":       signOffline(t, key, "off-1", idp, jwt.MapClaims{"iss": idp.Issuer()}),
			"other audience":   signOffline(t, key, "off-1", idp, jwt.MapClaims{"aud": "other"}),
			"no jti":           signOffline(t, key, "off-1", idp, jwt.MapClaims{"jti": nil}),
			"no iat":           signOffline(t, key, "off-1", idp, jwt.MapClaims{"iat": nil}),
			"no primary iss":   signOffline(t, key, "off-1", idp, jwt.MapClaims{ClaimPrimaryIssuer: nil}),
			"other primary":    signOffline(t, key, "off-1", idp, jwt.MapClaims{ClaimPrimaryIssuer: "https://other.example/"}),
		} {
			_, err := v.Verify(context.Background(), tok)
			assert.ErrorIs(t, err, ErrInvalidToken, name)
		}
		// An unknown kid in fallback mode is a key that cannot be fetched
		// now, not a bad token: 503, not 401.
		_, err = v.Verify(context.Background(), signOffline(t, other, "off-2", idp, nil))
		assert.ErrorIs(t, err, ErrUnavailable, "unknown kid")
		assert.ErrorIs(t, err, ErrUnknownKeyID, "unknown kid")
		assert.NotErrorIs(t, err, ErrInvalidToken, "unknown kid")

		// Past MaxOfflineDuration: fail closed, even for a fresh offline
		// token.
		time.Sleep(31 * time.Minute)
		fresh := signOffline(t, key, "off-1", idp, nil)
		_, err = v.Verify(context.Background(), fresh)
		assert.ErrorIs(t, err, ErrFallbackExpired)
		assert.ErrorIs(t, err, ErrUnavailable)
	})
}

func TestOfflineTokensAlwaysAndRotation(t *testing.T) {
	idp := edIdP(t)
	synctest.Test(t, func(t *testing.T) {
		v, o, _ := policyVerifier(t, idp, func(c *Config) { c.AcceptOfflineTokensAlways = true })
		tok, err := o.Issue(context.Background(), &Result{Subject: "alice", Issuer: idp.Issuer(), Scopes: []string{"orders:read"},
			ExpiresAt: time.Now().Add(time.Hour), Claims: jwt.MapClaims{"aud": idp.Audience()}}, nil)
		require.NoError(t, err)
		res, err := v.Verify(context.Background(), tok.Token)
		require.NoError(t, err, "accepted with the IdP up when opted in")
		assert.Equal(t, ReasonOfflineToken, res.Reason)
		// The caller is the primary issuer's subject, so a write sent with
		// the offline token and re-sent with a refreshed primary is one
		// idempotency record.
		c := caller.FromContext(NewContext(context.Background(), res))
		require.NotNil(t, c)
		assert.Equal(t, caller.ID(idp.Issuer(), "alice"), c.ID())

		// A rotation is seen at once; the old key retires after TTL.
		_, next, err := ed25519.GenerateKey(rand.Reader)
		require.NoError(t, err)
		require.NoError(t, o.Rotate(next, "off-2"))
		tok2, err := o.Issue(context.Background(), &Result{Subject: "alice", Issuer: idp.Issuer(), Scopes: []string{"orders:read"},
			ExpiresAt: time.Now().Add(time.Hour), Claims: jwt.MapClaims{"aud": idp.Audience()}}, nil)
		require.NoError(t, err)
		_, err = v.Verify(context.Background(), tok2.Token)
		require.NoError(t, err, "new key trusted without a restart")
		_, err = v.Verify(context.Background(), tok.Token)
		require.NoError(t, err, "old key still trusted for its tokens in flight")

		time.Sleep(10*time.Minute + time.Second)
		late := signOffline(t, o.cfg.Key, "off-1", idp, nil)
		_, err = v.Verify(context.Background(), late)
		assert.ErrorIs(t, err, ErrUnknownKeyID, "retired key")
	})
}

func TestDegradedNarrowingAndTokenAge(t *testing.T) {
	idp := edIdP(t)
	synctest.Test(t, func(t *testing.T) {
		// Empty AllowedScopes: a degraded request keeps no scope.
		v, _, audit := policyVerifier(t, idp, func(c *Config) {
			c.Offline = nil
			c.Policy = Policy{MaxTokenAge: time.Hour}
		})
		young := idp.Issue(jwt.MapClaims{"scope": "orders:read orders:write"})
		old := idp.Issue(jwt.MapClaims{"iat": time.Now().Add(-2 * time.Hour).Unix()})
		noIat := idp.Issue(jwt.MapClaims{"iat": nil})
		res, err := v.Verify(context.Background(), young)
		require.NoError(t, err)
		assert.Len(t, res.Scopes, 2, "no narrowing outside fallback mode")
		_, err = v.Verify(context.Background(), old)
		require.NoError(t, err, "no age limit outside fallback mode")

		down(t, v, idp)
		res, err = v.Verify(context.Background(), young)
		require.NoError(t, err)
		assert.Empty(t, res.Scopes)
		assert.Equal(t, []string{"orders:read", "orders:write"}, res.RemovedScopes)
		assert.False(t, res.HasScope("orders:read"))
		_, err = v.Verify(context.Background(), old)
		assert.ErrorIs(t, err, ErrOutsidePolicy, "older than MaxTokenAge (from the cache)")
		_, err = v.Verify(context.Background(), noIat)
		assert.ErrorIs(t, err, ErrOutsidePolicy, "no iat: age unknown")
		assert.Contains(t, audit.String(), `"removed_scopes":"orders:read orders:write"`)
		assert.Contains(t, audit.String(), "refused by policy")
	})
}

func TestExpiredGrace(t *testing.T) {
	idp := edIdP(t)
	synctest.Test(t, func(t *testing.T) {
		v, _, audit := policyVerifier(t, idp, nil)
		exp := func(d time.Duration) jwt.MapClaims { return jwt.MapClaims{"exp": time.Now().Add(d).Unix()} }
		seen := idp.Issue(exp(2 * time.Minute))
		seenLate := idp.Issue(exp(2 * time.Minute))
		neverSeen := idp.Issue(exp(2 * time.Minute))
		expiredBefore := idp.Issue(exp(30 * time.Second))
		for _, tok := range []string{seen, seenLate, expiredBefore} {
			_, err := v.Verify(context.Background(), tok)
			require.NoError(t, err)
		}
		time.Sleep(time.Minute)
		down(t, v, idp) // expiredBefore expired before the outage began
		time.Sleep(2 * time.Minute)

		_, err := v.Verify(context.Background(), neverSeen)
		assert.ErrorIs(t, err, jwt.ErrTokenExpired, "grace never applies to a token never seen")
		_, err = v.Verify(context.Background(), expiredBefore)
		assert.ErrorIs(t, err, jwt.ErrTokenExpired, "expired before the outage: no grace")
		// A window, not one request: every use inside it is accepted.
		for i := range 3 {
			res, err := v.Verify(context.Background(), seen)
			require.NoError(t, err, "use %d", i)
			assert.Equal(t, ReasonExpiredGrace, res.Reason)
			assert.True(t, res.Degraded)
			time.Sleep(time.Minute)
		}
		assert.Equal(t, 1, strings.Count(audit.String(), "expired grace used"), "audited on first use")
		// Until exp + ExpiredGrace, not after.
		time.Sleep(time.Until(time.Unix(jwtExp(t, seen), 0).Add(DefaultExpiredGrace)))
		_, err = v.Verify(context.Background(), seen)
		require.NoError(t, err, "at exp + grace")
		time.Sleep(time.Second)
		_, err = v.Verify(context.Background(), seen)
		assert.ErrorIs(t, err, jwt.ErrTokenExpired, "past exp + grace")

		// Past the window.
		time.Sleep(10 * time.Minute)
		_, err = v.Verify(context.Background(), seenLate)
		assert.ErrorIs(t, err, jwt.ErrTokenExpired, "past ExpiredGrace")
	})
}

func TestExpiredGraceOnlyInFallbackAndDisabled(t *testing.T) {
	idp := edIdP(t)
	synctest.Test(t, func(t *testing.T) {
		v, _, _ := policyVerifier(t, idp, nil)
		tok := idp.Issue(jwt.MapClaims{"exp": time.Now().Add(time.Minute).Unix()})
		_, err := v.Verify(context.Background(), tok)
		require.NoError(t, err)
		time.Sleep(2 * time.Minute)
		_, err = v.Verify(context.Background(), tok)
		assert.ErrorIs(t, err, jwt.ErrTokenExpired, "the IdP is up: no grace")

		v2, _, _ := policyVerifier(t, idp, func(c *Config) { c.Policy.ExpiredGrace = -1 })
		tok = idp.Issue(jwt.MapClaims{"exp": time.Now().Add(time.Minute).Unix()})
		_, err = v2.Verify(context.Background(), tok)
		require.NoError(t, err)
		down(t, v2, idp)
		time.Sleep(2 * time.Minute)
		_, err = v2.Verify(context.Background(), tok)
		assert.ErrorIs(t, err, jwt.ErrTokenExpired, "grace disabled")
		idp.SetDown(false)
	})
}

func TestRevokedFromCache(t *testing.T) {
	idp := edIdP(t)
	synctest.Test(t, func(t *testing.T) {
		var revs MemoryRevocations
		var seen []RevocationEvent
		v, _, audit := policyVerifier(t, idp, func(c *Config) {
			c.Revocations = &revs
			c.OnRevocation = func(ev RevocationEvent) { seen = append(seen, ev) }
		})
		a := idp.Issue(jwt.MapClaims{"sub": "alice", "jti": "a1"})
		b := idp.Issue(jwt.MapClaims{"sub": "bob", "jti": "b1"})
		for _, tok := range []string{a, b} {
			_, err := v.Verify(context.Background(), tok)
			require.NoError(t, err)
		}
		require.Equal(t, 2, v.Status().CachedTokens)

		revs.RevokeID("a1")
		_, err := v.Verify(context.Background(), a)
		assert.ErrorIs(t, err, ErrRevoked, "refused from the cache")
		assert.ErrorIs(t, err, ErrInvalidToken)
		revs.RevokeSubject("bob", time.Now())
		_, err = v.Verify(context.Background(), b)
		assert.ErrorIs(t, err, ErrRevoked)
		assert.Equal(t, 2, v.Status().CachedTokens, "answered from the cache, not re-parsed")
		assert.Equal(t, []RevocationEvent{{ID: "a1"}, {Subject: "bob", RevokedBefore: seen[1].RevokedBefore}}, seen, "OnRevocation from Config")
		assert.Contains(t, audit.String(), "revoked token refused")

		// A token of bob issued after the revocation is fine.
		time.Sleep(1100 * time.Millisecond) // iat has second precision
		_, err = v.Verify(context.Background(), idp.Issue(jwt.MapClaims{"sub": "bob"}))
		assert.NoError(t, err)

		// Close unsubscribes the hook.
		require.NoError(t, v.Close())
		revs.RevokeID("x")
		assert.Len(t, seen, 2)
	})
}

func TestReconcileKeyRemovedAndBound(t *testing.T) {
	idp := edIdP(t)
	synctest.Test(t, func(t *testing.T) {
		var found []ReconcileEvent
		v, _, audit := policyVerifier(t, idp, func(c *Config) {
			c.MaxDegradedRecords = 1
			c.OnReconcile = func(ev ReconcileEvent) { found = append(found, ev) }
		})
		a := idp.Issue(jwt.MapClaims{"sub": "alice", "scope": "orders:read"})
		b := idp.Issue(jwt.MapClaims{"sub": "bob"})
		down(t, v, idp)
		for range 3 {
			_, err := v.Verify(context.Background(), a)
			require.NoError(t, err)
		}
		_, err := v.Verify(context.Background(), b)
		require.NoError(t, err, "accepted, though not recorded")

		// The IdP comes back having replaced its key.
		idp.Rotate()
		idp.RetireOldKeys()
		idp.SetDown(false)
		require.NoError(t, v.Refresh(context.Background()))
		require.Len(t, found, 1)
		ev := found[0]
		assert.Equal(t, FindingKeyRemoved, ev.Finding)
		assert.Equal(t, "alice", ev.Subject)
		assert.Equal(t, ReasonJWKSUnreachable, ev.Reason)
		assert.Equal(t, 3, ev.Accepted)
		assert.Equal(t, []string{"orders:read"}, ev.Scopes)
		assert.Contains(t, audit.String(), `"not_recorded":1`)

		// The record is emptied: the next refresh reports nothing again.
		require.NoError(t, v.Refresh(context.Background()))
		assert.Len(t, found, 1)
	})
}

// A degraded Result's Claims carry the narrowed scopes, not the token's:
// an application that authorises from Claims gets no more than Scopes.
// The non-degraded (cached) Result keeps the token's claims.
func TestDegradedClaimsNarrowed(t *testing.T) {
	idp := edIdP(t)
	synctest.Test(t, func(t *testing.T) {
		v, _, _ := policyVerifier(t, idp, nil)
		a := idp.Issue(jwt.MapClaims{"scope": "orders:read orders:write", "scp": []string{"orders:read", "admin"}, "roles": []string{"admin"}})
		res, err := v.Verify(context.Background(), a)
		require.NoError(t, err)
		require.False(t, res.Degraded)
		down(t, v, idp)
		d, err := v.Verify(context.Background(), a)
		require.NoError(t, err)
		require.True(t, d.Degraded)
		assert.Equal(t, []string{"orders:read"}, d.Scopes)
		assert.Equal(t, "orders:read", d.Claims["scope"])
		assert.Equal(t, []any{"orders:read"}, d.Claims["scp"])
		assert.Equal(t, res.Claims["roles"], d.Claims["roles"], "other claims are not narrowed (documented)")
		assert.Equal(t, "orders:read orders:write", res.Claims["scope"], "the cached Result is untouched")
	})
}

// A key replaced under the same kid while the IdP was unreachable is a
// finding too: looking the kid up is not enough.
func TestReconcileKeyReplacedUnderSameKID(t *testing.T) {
	idp := edIdP(t)
	synctest.Test(t, func(t *testing.T) {
		var found []ReconcileEvent
		v, _, _ := policyVerifier(t, idp, func(c *Config) {
			c.OnReconcile = func(ev ReconcileEvent) { found = append(found, ev) }
		})
		a := idp.Issue(jwt.MapClaims{"sub": "alice", "scope": "orders:read"})
		down(t, v, idp)
		_, err := v.Verify(context.Background(), a)
		require.NoError(t, err)

		kid := idp.KeyID()
		require.Equal(t, kid, idp.ReplaceKey())
		idp.SetDown(false)
		require.NoError(t, v.Refresh(context.Background()))
		require.Len(t, found, 1)
		assert.Equal(t, FindingKeyReplaced, found[0].Finding)
		assert.Equal(t, kid, found[0].KeyID)
		assert.Equal(t, "alice", found[0].Subject)
	})
}

func TestPolicyConfigValidation(t *testing.T) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	off := func(iss string, aud []string, scopes ...string) *OfflineIssuer {
		o, err := NewOfflineIssuer(OfflineConfig{Issuer: iss, Audience: aud, Key: key, AllowedScopes: scopes})
		require.NoError(t, err)
		return o
	}
	base := Config{Issuer: "https://idp/", Audience: []string{"api"}, CacheFile: "/nonexistent/jwks.json",
		Policy: Policy{AllowedScopes: []string{"read"}}, AuditLog: slog.New(slog.DiscardHandler)}
	for name, mod := range map[string]func(*Config){
		"offline issuer is the IdP":   func(c *Config) { c.Offline = off("https://idp/", []string{"api"}, "read") },
		"offline without audience":    func(c *Config) { c.Offline = off("urn:off", nil, "read") },
		"offline other audience":      func(c *Config) { c.Offline = off("urn:off", []string{"other"}, "read") },
		"offline scope beyond policy": func(c *Config) { c.Offline = off("urn:off", []string{"api"}, "read", "write") },
		"negative MaxOfflineDuration": func(c *Config) { c.Policy.MaxOfflineDuration = -1 },
		"negative MaxTokenAge":        func(c *Config) { c.Policy.MaxTokenAge = -1 },
		"bad allowed scope":           func(c *Config) { c.Policy.AllowedScopes = []string{"a b"} },
		"negative records":            func(c *Config) { c.MaxDegradedRecords = -1 },
		"empty audience entry":        func(c *Config) { c.Audience = []string{""} },
		"blank audience entry":        func(c *Config) { c.Audience = []string{"api", " \t"} },
		"blank issuer":                func(c *Config) { c.Issuer = "  " },
	} {
		c := base
		mod(&c)
		_, err := New(c)
		assert.Error(t, err, name)
	}
	c := base
	c.Offline = off("urn:off", []string{"api", "other"}, "read")
	v, err := New(c)
	require.NoError(t, err)
	require.NoError(t, v.Close())
}

func TestHandlerPolicyResponses(t *testing.T) {
	idp := edIdP(t)
	synctest.Test(t, func(t *testing.T) {
		var revs MemoryRevocations
		v, _, _ := policyVerifier(t, idp, func(c *Config) { c.Revocations = &revs })
		h := v.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		serve := func(tok string) *httptest.ResponseRecorder {
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			return rec
		}
		revs.RevokeID("bad")
		rec := serve(idp.Issue(jwt.MapClaims{"jti": "bad"}))
		assert.Equal(t, http.StatusUnauthorized, rec.Code)
		assert.Contains(t, rec.Header().Get("WWW-Authenticate"), `error="invalid_token"`)
		assert.Contains(t, rec.Body.String(), "revoked")

		tok := idp.Issue(nil)
		down(t, v, idp)
		assert.Equal(t, http.StatusOK, serve(tok).Code)
		time.Sleep(31 * time.Minute)
		rec = serve(tok)
		assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
		assert.NotEmpty(t, rec.Header().Get("Retry-After"))
		assert.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"))
		assert.Contains(t, rec.Body.String(), "fallback policy")
	})
}

// jwtExp reads the exp claim of tok without verifying it.
func jwtExp(t *testing.T, tok string) int64 {
	t.Helper()
	claims := jwt.MapClaims{}
	_, _, err := jwt.NewParser().ParseUnverified(tok, claims)
	require.NoError(t, err)
	exp, err := claims.GetExpirationTime()
	require.NoError(t, err)
	return exp.Unix()
}
