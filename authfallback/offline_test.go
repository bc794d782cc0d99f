package authfallback

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const offlineTestIssuer = "https://api.example.com/offline"

type offlineLogBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *offlineLogBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *offlineLogBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func offlineKeyT(t testing.TB) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	return k
}

func newOfflineT(t testing.TB, mod func(*OfflineConfig)) (*OfflineIssuer, *offlineLogBuf) {
	logs := &offlineLogBuf{}
	cfg := OfflineConfig{
		Issuer:        offlineTestIssuer,
		Audience:      []string{"api"},
		Key:           offlineKeyT(t),
		KeyID:         "k1",
		TTL:           10 * time.Minute,
		AllowedScopes: []string{"orders:read", "profile"},
		AuditLog:      slog.New(slog.NewJSONHandler(logs, nil)),
	}
	if mod != nil {
		mod(&cfg)
	}
	o, err := NewOfflineIssuer(cfg)
	require.NoError(t, err)
	return o, logs
}

func offlinePrimary() *Result {
	now := time.Now()
	return &Result{
		Subject: "alice", Issuer: "https://idp.example.com/", TokenHash: "abc123",
		Scopes:   []string{"orders:read", "orders:write", "profile"},
		ID:       "primary-1",
		IssuedAt: now.Add(-time.Minute).Truncate(time.Second), ExpiresAt: now.Add(time.Hour),
		Claims: jwt.MapClaims{"aud": "api"},
	}
}

// offlineSign signs claims with key under alg EdDSA and kid.
func offlineSign(t testing.TB, key ed25519.PrivateKey, kid string, claims jwt.MapClaims) string {
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	require.NoError(t, err)
	return s
}

func TestOfflineIssueAndVerify(t *testing.T) {
	o, logs := newOfflineT(t, nil)
	tok, err := o.Issue(context.Background(), offlinePrimary(), nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"orders:read", "profile"}, tok.Scopes, "narrowed to AllowedScopes")
	assert.Len(t, tok.ID, 22)

	res, err := offlineVerify(t, o, tok.Token)
	require.NoError(t, err)
	assert.Equal(t, "alice", res.Subject)
	assert.Equal(t, tok.Scopes, res.Scopes)
	assert.Equal(t, tok.ID, res.ID)
	assert.Equal(t, "k1", res.KeyID)
	assert.Equal(t, offlineTestIssuer, res.Issuer)
	assert.True(t, res.Degraded)
	assert.Equal(t, ReasonOfflineToken, res.Reason)
	assert.Equal(t, tok.ExpiresAt, res.ExpiresAt)
	assert.Equal(t, 10*time.Minute, res.ExpiresAt.Sub(res.IssuedAt))

	// Audit: one event with the hash, never the token.
	out := logs.String()
	assert.Contains(t, out, "offline token issued")
	assert.Contains(t, out, res.TokenHash)
	assert.Contains(t, out, `"subject":"alice"`)
	assert.Contains(t, out, tok.ID)
	assert.NotContains(t, out, tok.Token)
	assert.NotContains(t, out, strings.Split(tok.Token, ".")[2], "not even the signature")

	// jti is random.
	tok2, err := o.Issue(context.Background(), offlinePrimary(), nil)
	require.NoError(t, err)
	assert.NotEqual(t, tok.ID, tok2.ID)
}

func TestOfflineIssueNarrowsAndRefuses(t *testing.T) {
	o, _ := newOfflineT(t, nil)
	ctx := context.Background()

	tok, err := o.Issue(ctx, offlinePrimary(), []string{"profile", "orders:write", "admin"})
	require.NoError(t, err)
	assert.Equal(t, []string{"profile"}, tok.Scopes, "requested ∩ caller ∩ allowed")

	_, err = o.Issue(ctx, offlinePrimary(), []string{"orders:write"})
	assert.ErrorIs(t, err, ErrOfflineRefused, "nothing allowed left")

	narrow := offlinePrimary()
	narrow.Scopes = []string{"orders:write"}
	_, err = o.Issue(ctx, narrow, nil)
	assert.ErrorIs(t, err, ErrOfflineRefused, "caller has no allowed scope")

	_, err = o.Issue(ctx, nil, nil)
	assert.ErrorIs(t, err, ErrOfflineRefused)
	_, err = o.Issue(ctx, &Result{Scopes: []string{"profile"}}, nil)
	assert.ErrorIs(t, err, ErrOfflineRefused, "no subject")

	// No chaining: an offline token never buys another one.
	res, err := offlineVerify(t, o, tok.Token)
	require.NoError(t, err)
	_, err = o.Issue(ctx, res, nil)
	assert.ErrorIs(t, err, ErrOfflineRefused)
	forged := offlinePrimary()
	forged.Issuer = offlineTestIssuer
	_, err = o.Issue(ctx, forged, nil)
	assert.ErrorIs(t, err, ErrOfflineRefused)
}

func TestOfflineVerifyRefuses(t *testing.T) {
	o, _ := newOfflineT(t, nil)
	key := o.ring.Load().cur.priv
	now := time.Now()
	good := func() jwt.MapClaims {
		return jwt.MapClaims{
			"iss": offlineTestIssuer, "aud": "api", "sub": "alice", "jti": "j1",
			"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "scope": "profile",
			ClaimPrimaryIssuer: "https://idp.example.com/",
		}
	}
	with := func(k string, v any) jwt.MapClaims {
		c := good()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	_, err := offlineVerify(t, o, offlineSign(t, key, "k1", good()))
	require.NoError(t, err, "the baseline verifies")

	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	es := jwt.NewWithClaims(jwt.SigningMethodES256, good())
	es.Header["kid"] = "k1"
	esTok, err := es.SignedString(ecKey)
	require.NoError(t, err)
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, good())
	hs.Header["kid"] = "k1"
	hsTok, err := hs.SignedString([]byte(o.ring.Load().cur.pub.(ed25519.PublicKey)))
	require.NoError(t, err)
	none := jwt.NewWithClaims(jwt.SigningMethodNone, good())
	none.Header["kid"] = "k1"
	noneTok, err := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	require.NoError(t, err)
	crit := jwt.NewWithClaims(jwt.SigningMethodEdDSA, good())
	crit.Header["kid"] = "k1"
	crit.Header["crit"] = []string{"exp"}
	critTok, err := crit.SignedString(key)
	require.NoError(t, err)

	cases := map[string]string{
		"wider scope":          offlineSign(t, key, "k1", with("scope", "profile orders:write")),
		"no scope":             offlineSign(t, key, "k1", with("scope", nil)),
		"longer TTL":           offlineSign(t, key, "k1", with("exp", now.Add(10*time.Minute+time.Second).Unix())),
		"TTL over the maximum": offlineSign(t, key, "k1", with("exp", now.Add(time.Hour).Unix())),
		"expired":              offlineSign(t, key, "k1", with("exp", now.Add(-time.Second).Unix())),
		"no exp":               offlineSign(t, key, "k1", with("exp", nil)),
		"no iat":               offlineSign(t, key, "k1", with("iat", nil)),
		"iat in the future":    offlineSign(t, key, "k1", with("iat", now.Add(time.Minute).Unix())),
		"IdP issuer":           offlineSign(t, key, "k1", with("iss", "https://idp.example.com/")),
		"other audience":       offlineSign(t, key, "k1", with("aud", "other")),
		"no sub":               offlineSign(t, key, "k1", with("sub", nil)),
		"no jti":               offlineSign(t, key, "k1", with("jti", nil)),
		"unknown key":          offlineSign(t, offlineKeyT(t), "k1", good()),
		"unknown kid":          offlineSign(t, key, "k2", good()),
		"no kid":               offlineSign(t, key, "", good()),
		"alg ES256":            esTok,
		"alg HS256 with pub":   hsTok,
		"alg none":             noneTok,
		"crit header":          critTok,
		"too large":            offlineSign(t, key, "k1", with("pad", strings.Repeat("x", DefaultMaxTokenSize))),
		"garbage":              "a.b.c",
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			res, err := offlineVerify(t, o, tok)
			assert.Nil(t, res)
			assert.ErrorIs(t, err, ErrInvalidToken)
		})
	}
}

func TestOfflineRotation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o, _ := newOfflineT(t, func(c *OfflineConfig) { c.TTL = 5 * time.Minute })
		ctx := context.Background()
		old, err := o.Issue(ctx, offlinePrimary(), nil)
		require.NoError(t, err)

		time.Sleep(time.Minute)
		newKey := offlineKeyT(t)
		require.NoError(t, o.Rotate(newKey, ""))
		assert.Error(t, o.Rotate(offlineKeyT(t), "k1"), "kid in use with another key")
		fresh, err := o.Issue(ctx, offlinePrimary(), nil)
		require.NoError(t, err)
		assert.Equal(t, offlineThumbprint(newKey.Public().(ed25519.PublicKey)), mustVerify(t, o, fresh.Token).KeyID)
		assert.Equal(t, "k1", mustVerify(t, o, old.Token).KeyID, "in-flight token still verifies")
		assert.Len(t, o.PublicKeys(), 2)

		var jwks struct {
			Keys []map[string]string `json:"keys"`
		}
		require.NoError(t, json.Unmarshal(o.JWKS(), &jwks))
		require.Len(t, jwks.Keys, 2)
		for _, k := range jwks.Keys {
			assert.Equal(t, "OKP", k["kty"])
			assert.Equal(t, "Ed25519", k["crv"])
			assert.Equal(t, "EdDSA", k["alg"])
			assert.NotContains(t, k, "d", "no private part")
		}

		// A token signed by the old key after its retirement is refused,
		// even if its own exp were later.
		time.Sleep(5 * time.Minute)
		assert.Len(t, o.PublicKeys(), 1)
		forged := offlineSign(t, o.cfg.Key, "k1", jwt.MapClaims{
			"iss": offlineTestIssuer, "aud": "api", "sub": "alice", "jti": "x",
			"iat": time.Now().Unix(), "exp": time.Now().Add(time.Minute).Unix(), "scope": "profile",
		})
		_, err = offlineVerify(t, o, forged)
		assert.ErrorIs(t, err, ErrInvalidToken, "retired key")
		later, err := o.Issue(ctx, offlinePrimary(), nil)
		require.NoError(t, err)
		mustVerify(t, o, later.Token)
	})
}

func mustVerify(t *testing.T, o *OfflineIssuer, tok string) *Result {
	t.Helper()
	res, err := offlineVerify(t, o, tok)
	require.NoError(t, err)
	return res
}

// offlineVerifier returns a Verifier that trusts o and accepts its tokens
// outside fallback mode, with a key set from a CacheFile only (no network,
// no goroutine: usable in a synctest bubble).
func offlineVerifier(t testing.TB, o *OfflineIssuer) *Verifier {
	t.Helper()
	return offlineVerifierWith(t, o, nil)
}

// offlineVerifierWith is offlineVerifier with a Config changed by mod.
func offlineVerifierWith(t testing.TB, o *OfflineIssuer, mod func(*Config)) *Verifier {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	doc, err := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "OKP", "crv": "Ed25519", "kid": "idp-1", "x": base64.RawURLEncoding.EncodeToString(pub),
	}}})
	require.NoError(t, err)
	ks, err := parseKeySet(doc, []string{"EdDSA"})
	require.NoError(t, err)
	ks.fetchedAt = time.Now()
	path := filepath.Join(t.TempDir(), "jwks.json")
	require.NoError(t, writeCacheFile(path, ks, cacheBinding{issuer: "https://idp.example.com/"}))
	cfg := Config{
		Issuer: "https://idp.example.com/", Audience: []string{"api"}, CacheFile: path,
		Offline: o, AcceptOfflineTokensAlways: true,
		Policy:   Policy{AllowedScopes: []string{"orders:read", "profile"}},
		AuditLog: slog.New(slog.DiscardHandler),
	}
	if mod != nil {
		mod(&cfg)
	}
	v, err := New(cfg)
	require.NoError(t, err)
	return v
}

// offlineVerify verifies tok with a fresh offlineVerifier for o.
func offlineVerify(t testing.TB, o *OfflineIssuer, tok string) (*Result, error) {
	t.Helper()
	return offlineVerifier(t, o).Verify(context.Background(), tok)
}

func TestOfflineConfigValidation(t *testing.T) {
	ok := OfflineConfig{Issuer: "x", Key: offlineKeyT(t), AllowedScopes: []string{"a"}}
	for name, mod := range map[string]func(*OfflineConfig){
		"no issuer": func(c *OfflineConfig) { c.Issuer = "" },
		"key and public keys": func(c *OfflineConfig) {
			c.PublicKeys = map[string]crypto.PublicKey{"k": c.Key.Public()}
		},
		"empty public keys": func(c *OfflineConfig) { c.Key, c.PublicKeys = nil, map[string]crypto.PublicKey{} },
		"RSA public key": func(c *OfflineConfig) {
			c.Key, c.PublicKeys = nil, map[string]crypto.PublicKey{"k": &rsa.PublicKey{N: big.NewInt(1), E: 3}}
		},
		"keys and URL": func(c *OfflineConfig) {
			c.Key, c.PublicKeys, c.JWKSURL = nil, map[string]crypto.PublicKey{"k": c.Key.Public()}, "https://x.test/jwks"
		},
		"plain http URL": func(c *OfflineConfig) { c.Key, c.JWKSURL = nil, "http://x.test/jwks" },
		"short key":      func(c *OfflineConfig) { c.Key = c.Key[:32] },
		"TTL too long":   func(c *OfflineConfig) { c.TTL = MaxOfflineTTL + time.Second },
		"no scopes":      func(c *OfflineConfig) { c.AllowedScopes = nil },
		"bad scope":      func(c *OfflineConfig) { c.AllowedScopes = []string{"a b"} },
		"leeway":         func(c *OfflineConfig) { c.Leeway = 2 * time.Minute },
		"blank issuer":   func(c *OfflineConfig) { c.Issuer = " " },
		"blank aud":      func(c *OfflineConfig) { c.Audience = []string{"api", ""} },
	} {
		c := ok
		mod(&c)
		_, err := NewOfflineIssuer(c)
		assert.Error(t, err, name)
	}
	o, err := NewOfflineIssuer(ok)
	require.NoError(t, err)
	assert.Equal(t, DefaultOfflineTTL, o.ttl)

	// No key at all: an Ed25519 key is generated in memory.
	o, _ = newOfflineT(t, func(c *OfflineConfig) { c.Key, c.KeyID = nil, "" })
	tok, err := o.Issue(context.Background(), offlinePrimary(), nil)
	require.NoError(t, err)
	mustVerify(t, o, tok.Token)
}

func TestOfflineExchangeHandler(t *testing.T) {
	o, logs := newOfflineT(t, nil)
	h := o.ExchangeHandler()
	do := func(method string, res *Result, form url.Values) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, "/token/offline", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if res != nil {
			req = req.WithContext(NewContext(req.Context(), res))
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}

	rec := do("POST", offlinePrimary(), url.Values{"scope": {"orders:read orders:write"}})
	require.Equal(t, 200, rec.Code, rec.Body.String())
	assert.Equal(t, "no-store", rec.Header().Get("Cache-Control"))
	var body offlineExchangeResponse
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
	assert.Equal(t, "Bearer", body.TokenType)
	assert.Equal(t, "orders:read", body.Scope)
	assert.Equal(t, OfflineTokenType, body.IssuedTokenType)
	assert.InDelta(t, 600, body.ExpiresIn, 2)
	res, err := offlineVerify(t, o, body.AccessToken)
	require.NoError(t, err)
	assert.Equal(t, []string{"orders:read"}, res.Scopes)
	assert.NotContains(t, logs.String(), body.AccessToken)

	rec = do("POST", nil, nil)
	assert.Equal(t, 401, rec.Code)
	assert.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"))
	assert.Contains(t, rec.Header().Get("WWW-Authenticate"), "invalid_token")

	rec = do("POST", res, nil)
	assert.Equal(t, 403, rec.Code, "an offline token buys no other")
	assert.Contains(t, rec.Body.String(), "offline-token-refused")

	rec = do("POST", offlinePrimary(), url.Values{"scope": {"admin"}})
	assert.Equal(t, 403, rec.Code)
	assert.Contains(t, rec.Header().Get("WWW-Authenticate"), "insufficient_scope")

	rec = do("POST", offlinePrimary(), url.Values{"scope": {""}})
	assert.Equal(t, 403, rec.Code, "an empty scope asks for nothing")

	rec = do("GET", offlinePrimary(), nil)
	assert.Equal(t, 405, rec.Code)
	assert.Equal(t, "POST", rec.Header().Get("Allow"))

	req := httptest.NewRequest("POST", "/token/offline", strings.NewReader("scope="+strings.Repeat("a", offlineMaxExchangeBody+1)))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req = req.WithContext(NewContext(req.Context(), offlinePrimary()))
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	assert.Equal(t, http.StatusBadRequest, rec.Code, "oversized form")
}

func FuzzOfflineVerify(f *testing.F) {
	o, _ := newOfflineT(f, func(c *OfflineConfig) { c.AuditLog = slog.New(slog.DiscardHandler) })
	tok, err := o.Issue(context.Background(), offlinePrimary(), nil)
	require.NoError(f, err)
	f.Add(tok.Token)
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	v := offlineVerifier(f, o)
	f.Fuzz(func(t *testing.T, raw string) {
		res, err := v.Verify(context.Background(), raw)
		if err == nil {
			// Only a token minted by o can verify (Ed25519 is not forgeable
			// by a fuzzer), and it must be within policy.
			if !res.Degraded || res.Reason != ReasonOfflineToken || res.ExpiresAt.Sub(res.IssuedAt) > MaxOfflineTTL {
				t.Fatalf("accepted out of policy: %+v", res)
			}
		}
	})
}

// BenchmarkOfflineVerify measures a Verifier's first verification of an
// offline token (the verified-token cache is off); the baseline is the
// bare jwt/v5 parse of the same token with the same key.
func BenchmarkOfflineVerify(b *testing.B) {
	o, _ := newOfflineT(b, func(c *OfflineConfig) { c.AuditLog = slog.New(slog.DiscardHandler) })
	tok, err := o.Issue(context.Background(), offlinePrimary(), nil)
	require.NoError(b, err)
	pub := o.ring.Load().cur.pub
	b.Run("baseline-jwt-parse", func(b *testing.B) {
		b.ReportAllocs()
		p := jwt.NewParser(jwt.WithValidMethods([]string{"EdDSA"}))
		for b.Loop() {
			if _, err := p.Parse(tok.Token, func(*jwt.Token) (any, error) { return pub, nil }); err != nil {
				b.Fatal(err)
			}
		}
	})
	v := offlineVerifier(b, o)
	v.cache = newTokenCache(0)
	b.Run("verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(context.Background(), tok.Token); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// A token accepted once in its expired grace window, or degraded for any
// reason other than fallback mode / stale keys, never buys an offline
// token: the exchange would turn a single-use acceptance of an expired
// token into a fresh 10-15 minute bearer token.
func TestOfflineIssueRefusesGraceAndUnknownDegraded(t *testing.T) {
	o, logs := newOfflineT(t, nil)
	ctx := context.Background()
	for _, reason := range []string{ReasonExpiredGrace, "revocations-stale", "something-new"} {
		p := offlinePrimary()
		p.Degraded, p.Reason = true, reason
		_, err := o.Issue(ctx, p, nil)
		assert.ErrorIs(t, err, ErrOfflineRefused, reason)
	}
	assert.Contains(t, logs.String(), "offline token refused")

	for _, reason := range []string{ReasonJWKSUnreachable, ReasonJWKSInvalid, ReasonJWKSStale} {
		p := offlinePrimary()
		p.Degraded, p.Reason = true, reason
		_, err := o.Issue(ctx, p, nil)
		assert.NoError(t, err, reason)
	}

	// Through the exchange endpoint: 403 problem.
	p := offlinePrimary()
	p.Degraded, p.Reason = true, ReasonExpiredGrace
	req := httptest.NewRequest("POST", "/token/offline", nil)
	req = req.WithContext(NewContext(req.Context(), p))
	rec := httptest.NewRecorder()
	o.ExchangeHandler().ServeHTTP(rec, req)
	assert.Equal(t, http.StatusForbidden, rec.Code)
	assert.Contains(t, rec.Body.String(), ProblemOfflineRefused)
}

// An offline token is tied to its primary: it never outlives it, carries
// its jti and iat, so revoking the primary (by jti, or its subject as of
// any time after the primary was issued) revokes the offline token, and
// MaxTokenAge counts from the primary's iat. Its audience is within the
// primary's.
func TestOfflineTokenTiedToPrimary(t *testing.T) {
	ctx := context.Background()
	o, _ := newOfflineT(t, func(c *OfflineConfig) { c.Audience = []string{"api", "other"} })

	// exp = min(now+TTL, primary exp).
	p := offlinePrimary()
	p.ExpiresAt = time.Now().Add(20 * time.Second)
	tok, err := o.Issue(ctx, p, nil)
	require.NoError(t, err)
	assert.False(t, tok.ExpiresAt.After(p.ExpiresAt), "never outlives the primary")
	assert.WithinDuration(t, p.ExpiresAt, tok.ExpiresAt, time.Second)

	// Claims: primary jti and iat; aud is the intersection.
	res := mustVerify(t, o, tok.Token)
	assert.Equal(t, "primary-1", res.Claims[ClaimPrimaryID])
	assert.EqualValues(t, p.IssuedAt.Unix(), res.Claims[ClaimPrimaryIssuedAt])
	assert.Equal(t, "api", res.Claims["aud"], "OfflineConfig.Audience ∩ primary aud")

	// A primary for another audience, expired, or without exp buys nothing.
	other := offlinePrimary()
	other.Claims = jwt.MapClaims{"aud": "billing"}
	_, err = o.Issue(ctx, other, nil)
	assert.ErrorIs(t, err, ErrOfflineRefused, "audience")
	expired := offlinePrimary()
	expired.ExpiresAt = time.Now().Add(-time.Second)
	_, err = o.Issue(ctx, expired, nil)
	assert.ErrorIs(t, err, ErrOfflineRefused, "expired primary")
	noExp := offlinePrimary()
	noExp.ExpiresAt = time.Time{}
	_, err = o.Issue(ctx, noExp, nil)
	assert.ErrorIs(t, err, ErrOfflineRefused, "primary without exp")

	tok, err = o.Issue(ctx, offlinePrimary(), nil)
	require.NoError(t, err)

	// Revoking the primary's jti revokes the offline token.
	revs := &MemoryRevocations{}
	v := offlineVerifierWith(t, o, func(c *Config) { c.Revocations = revs })
	_, err = v.Verify(ctx, tok.Token)
	require.NoError(t, err)
	revs.RevokeID("primary-1")
	_, err = v.Verify(ctx, tok.Token)
	assert.ErrorIs(t, err, ErrRevoked, "primary jti revoked")

	// A subject revocation dated after the primary's iat but before the
	// exchange revokes it too (the offline token's own iat is later).
	tok, err = o.Issue(ctx, offlinePrimary(), nil)
	require.NoError(t, err)
	revs2 := &MemoryRevocations{}
	revs2.RevokeSubject("alice", time.Now().Add(-30*time.Second))
	_, err = offlineVerifierWith(t, o, func(c *Config) { c.Revocations = revs2 }).Verify(ctx, tok.Token)
	assert.ErrorIs(t, err, ErrRevoked, "subject revoked after the primary was issued")

	// MaxTokenAge counts from the primary's iat.
	old := offlinePrimary()
	old.IssuedAt = time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	tok, err = o.Issue(ctx, old, nil)
	require.NoError(t, err)
	_, err = offlineVerifierWith(t, o, func(c *Config) { c.Policy.MaxTokenAge = time.Hour }).Verify(ctx, tok.Token)
	assert.ErrorIs(t, err, ErrOutsidePolicy, "primary older than MaxTokenAge")
}
