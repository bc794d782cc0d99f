package authfallback_test

// Tests of the defects of issue 13, each one failing on the code before it.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
)

// TestManualRefreshFailureReschedules: a failed Refresh schedules the
// background retry with backoff (not the old RefreshInterval schedule),
// Status.NextAttempt is never in the past, and the 503's Retry-After
// follows it.
func TestManualRefreshFailureReschedules(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeIdP(t)
		v := newFakeVerifier(t, f, nil)
		defer v.Close()
		require.Equal(t, 1, f.hitCount())
		time.Sleep(time.Minute)
		f.setFail(true)
		require.Error(t, v.Refresh(context.Background()))
		hits := f.hitCount()
		st := v.Status()
		require.True(t, st.Fallback)
		assert.WithinRange(t, st.NextAttempt, time.Now().Add(500*time.Millisecond), time.Now().Add(time.Second),
			"backoff after the failure, not the refresh interval")

		// The loop follows: it retries by the backoff, not 4 minutes later.
		time.Sleep(time.Second)
		synctest.Wait()
		assert.Greater(t, f.hitCount(), hits, "the background retry came after the backoff")

		// Never in the past, whatever the moment.
		for range 50 {
			time.Sleep(700 * time.Millisecond)
			st := v.Status()
			assert.False(t, st.NextAttempt.Before(time.Now()), "NextAttempt %v in the past (now %v)", st.NextAttempt, time.Now())
		}

	})
}

// TestRetryAfterFollowsTheSchedule: the 503 of an unknown kid during
// fallback carries Retry-After until the next scheduled attempt (the
// backoff of the failure just recorded), never a time in the past.
func TestRetryAfterFollowsTheSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeIdP(t)
		v := newFakeVerifier(t, f, func(c *authfallback.Config) { c.UnknownKIDRefreshInterval = time.Hour })
		defer v.Close()
		f.setFail(true)
		require.Error(t, v.Refresh(context.Background()))
		synctest.Wait()
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		unknown := f.issue(t, f.rotate(t), time.Hour)
		req.Header.Set("Authorization", "Bearer "+unknown)
		v.Handler(http.NotFoundHandler()).ServeHTTP(rec, req)
		assert.Equal(t, http.StatusServiceUnavailable, rec.Code, "unknown kid in fallback: 503, not 401")
		assert.Empty(t, rec.Header().Get("WWW-Authenticate"), "the token is not known to be bad")
		// One or two failures (the unknown kid also asks for a refresh):
		// a backoff of at most 2 s, rounded up.
		assert.Contains(t, []string{"1", "2"}, rec.Header().Get("Retry-After"))
	})
}

// TestHooksNeverCalledInsideNew: with the IdP down at start, with and
// without a CacheFile, no hook runs inside New (on the caller's goroutine,
// before New returned), so wiring whose hook target is assigned after New
// does not find it nil there.
func TestHooksNeverCalledInsideNew(t *testing.T) {
	for _, withFile := range []bool{false, true} {
		t.Run(fmt.Sprintf("CacheFile=%v", withFile), func(t *testing.T) {
			idp := newIdP(t, "EdDSA")
			file := ""
			if withFile {
				file = filepath.Join(t.TempDir(), "jwks.json")
				h := newHarness(t, idp, func(c *authfallback.Config) { c.CacheFile = file })
				require.Eventually(t, func() bool { return h.v.Status().KeyCount > 0 }, 5*time.Second, 5*time.Millisecond)
				require.NoError(t, h.v.Close())
			}
			idp.SetDown(true)
			// A hook called inside New would run on this goroutine, before
			// New returned: it would wait for returned in vain. Called on
			// the refresh goroutine, it waits until the caller assigned
			// the target and then finds it.
			returned := make(chan struct{})
			var target atomic.Pointer[authfallback.Verifier]
			var called sync.WaitGroup
			called.Add(1)
			var once sync.Once
			hook := func() {
				select {
				case <-returned:
				case <-time.After(3 * time.Second):
					t.Error("hook called inside New")
				}
				once.Do(called.Done)
			}
			use := func() {
				v := target.Load()
				if assert.NotNil(t, v, "the target assigned after New") {
					_ = v.Status()
				}
			}
			v, err := authfallback.New(authfallback.Config{
				Issuer: idp.Issuer(), Audience: []string{idp.Audience()}, JWKSURLs: []string{idp.JWKSURL()},
				CacheFile: file, HTTPClient: &http.Client{}, FetchTimeout: time.Second, AuditLog: discard(),
				RefreshInterval: time.Hour,
				OnFallbackEnter: func(authfallback.FallbackEvent) { hook(); use() },
				OnRefreshError:  func(authfallback.RefreshErrorEvent) { hook() },
			})
			require.NoError(t, err)
			target.Store(v)
			close(returned)
			defer v.Close()
			called.Wait()
		})
	}
}

// edKeyServer serves a JWKS with the Ed25519 keys of keys (by kid); down
// makes it answer 503.
type edKeyServer struct {
	srv  *httptest.Server
	mu   sync.Mutex
	keys map[string]ed25519.PrivateKey
	down atomic.Bool
}

func newEdKeyServer(t *testing.T, keys map[string]ed25519.PrivateKey) *edKeyServer {
	s := &edKeyServer{keys: keys}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		doc := jwkset.JWKSMarshal{}
		for kid, k := range s.keys {
			jwk, err := jwkset.NewJWKFromKey(k.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid}})
			if err != nil {
				panic(err)
			}
			doc.Keys = append(doc.Keys, jwk.Marshal())
		}
		_ = json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func edKey(t *testing.T) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	return k
}

// signRaw signs the JSON payload as is (duplicate members and all) with
// EdDSA under kid.
func signRaw(key ed25519.PrivateKey, header, payload string) string {
	enc := base64.RawURLEncoding
	ss := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	return ss + "." + enc.EncodeToString(ed25519.Sign(key, []byte(ss)))
}

// TestAlternateURLCannotChangeAPrimaryKey: the primary served key A under
// kid k1; while it is down, an alternate URL serves key B under k1. B is
// accepted only degraded (ReasonJWKSKeyChanged), with an audit event; when
// the primary is back with A, the tokens B verified are reconciled.
func TestAlternateURLCannotChangeAPrimaryKey(t *testing.T) {
	a, b := edKey(t), edKey(t)
	primary := newEdKeyServer(t, map[string]ed25519.PrivateKey{"k1": a})
	alternate := newEdKeyServer(t, map[string]ed25519.PrivateKey{"k1": b})
	audit := &syncBuffer{}
	var mu sync.Mutex
	var findings []authfallback.ReconcileEvent
	v, err := authfallback.New(authfallback.Config{
		Issuer: "https://idp.test/", Audience: []string{"api"},
		JWKSURLs:   []string{primary.srv.URL, alternate.srv.URL},
		HTTPClient: &http.Client{}, AuditLog: slog.New(slog.NewJSONHandler(audit, nil)),
		Policy:      authfallback.Policy{AllowedScopes: []string{"orders:read"}},
		OnReconcile: func(ev authfallback.ReconcileEvent) { mu.Lock(); findings = append(findings, ev); mu.Unlock() },
	})
	require.NoError(t, err)
	defer v.Close()
	now := time.Now()
	claims := fmt.Sprintf(`{"iss":"https://idp.test/","aud":"api","sub":"alice","iat":%d,"exp":%d,"scope":"orders:read orders:write"}`, now.Unix(), now.Add(time.Hour).Unix())
	tokA := signRaw(a, `{"alg":"EdDSA","kid":"k1"}`, claims)
	tokB := signRaw(b, `{"alg":"EdDSA","kid":"k1","typ":"JWT"}`, claims)
	res, err := v.Verify(context.Background(), tokA)
	require.NoError(t, err)
	require.False(t, res.Degraded)

	primary.down.Store(true)
	require.NoError(t, v.Refresh(context.Background()), "the alternate answers")
	assert.Equal(t, alternate.srv.URL, v.Status().Source)
	res, err = v.Verify(context.Background(), tokB)
	require.NoError(t, err)
	assert.True(t, res.Degraded, "a key the primary did not serve under its kid is not trusted as the primary's")
	assert.Equal(t, authfallback.ReasonJWKSKeyChanged, res.Reason)
	assert.Equal(t, []string{"orders:read"}, res.Scopes, "narrowed by the policy")
	assert.Contains(t, audit.String(), "alternate JWKS URL changed the key under a kid the primary served")
	_, err = v.Verify(context.Background(), tokA)
	assert.Error(t, err, "A is not in the alternate's set")

	primary.down.Store(false)
	require.NoError(t, v.Refresh(context.Background()))
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, findings, 1)
	assert.Equal(t, authfallback.FindingKeyReplaced, findings[0].Finding)
}

// TestClaimsStrict: duplicate member names (in the claims or the header,
// also when spelled with escapes) and non-string "sub", "iss" or "jti" are
// refused.
func TestClaimsStrict(t *testing.T) {
	key := edKey(t)
	srv := newEdKeyServer(t, map[string]ed25519.PrivateKey{"k1": key})
	v, err := authfallback.New(authfallback.Config{
		Issuer: "https://idp.test/", Audience: []string{"api"}, JWKSURLs: []string{srv.srv.URL},
		HTTPClient: &http.Client{}, AuditLog: discard(),
	})
	require.NoError(t, err)
	defer v.Close()
	now := time.Now()
	std := fmt.Sprintf(`"iss":"https://idp.test/","aud":"api","iat":%d,"exp":%d`, now.Unix(), now.Add(time.Hour).Unix())
	hdr := `{"alg":"EdDSA","kid":"k1"}`
	res, err := v.Verify(context.Background(), signRaw(key, hdr, `{`+std+`,"sub":"alice","jti":"j1"}`))
	require.NoError(t, err, "the baseline verifies")
	require.Equal(t, "alice", res.Subject)
	for name, tok := range map[string]string{
		"duplicate sub":          signRaw(key, hdr, `{`+std+`,"sub":"alice","sub":"admin"}`),
		"duplicate sub, escaped": signRaw(key, hdr, `{`+std+`,"sub":"alice","s\u0075b":"admin"}`),
		"duplicate iss":          signRaw(key, hdr, `{`+std+`,"sub":"alice","iss":"https://evil.test/"}`),
		"duplicate header kid":   signRaw(key, `{"alg":"EdDSA","kid":"k1","kid":"k2"}`, `{`+std+`,"sub":"alice"}`),
		"numeric sub":            signRaw(key, hdr, `{`+std+`,"sub":42}`),
		"object sub":             signRaw(key, hdr, `{`+std+`,"sub":{"id":"alice"}}`),
		"numeric jti":            signRaw(key, hdr, `{`+std+`,"sub":"alice","jti":7}`),
		"null sub":               signRaw(key, hdr, `{`+std+`,"sub":null}`),
	} {
		_, err := v.Verify(context.Background(), tok)
		assert.ErrorIs(t, err, authfallback.ErrInvalidToken, name)
	}
	// Nested objects may repeat names of the top level.
	_, err = v.Verify(context.Background(), signRaw(key, hdr, `{`+std+`,"sub":"alice","act":{"sub":"bob","iss":"x"}}`))
	assert.NoError(t, err)
}

// TestDegradedAuditOncePerInterval: the degraded acceptances of one token
// write one audit line per DegradedAuditInterval, with a count, not one
// per request.
func TestDegradedAuditOncePerInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeIdP(t)
		audit := &syncBuffer{}
		v := newFakeVerifier(t, f, func(c *authfallback.Config) { c.AuditLog = slog.New(slog.NewJSONHandler(audit, nil)) })
		defer v.Close()
		tok := f.issue(t, f.order[0], 2*time.Hour)
		other := f.issue(t, f.order[0], 2*time.Hour+time.Second)
		f.setFail(true)
		require.Error(t, v.Refresh(context.Background()))
		for range 200 {
			_, err := v.Verify(context.Background(), tok)
			require.NoError(t, err)
		}
		_, err := v.Verify(context.Background(), other)
		require.NoError(t, err)
		lines := func() []map[string]any {
			var out []map[string]any
			for _, l := range strings.Split(strings.TrimSpace(audit.String()), "\n") {
				var m map[string]any
				if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "authfallback: degraded acceptance" {
					out = append(out, m)
				}
			}
			return out
		}
		require.Len(t, lines(), 2, "one line per token, not 201")
		time.Sleep(authfallback.DegradedAuditInterval)
		_, err = v.Verify(context.Background(), tok)
		require.NoError(t, err)
		l := lines()
		require.Len(t, l, 3)
		assert.EqualValues(t, 200, l[2]["count"], "the acceptances since the last line")
	})
}

// TestDegradedRecordBoundedPerSubject: one subject with many tokens cannot
// crowd another subject's token out of the record of degraded
// acceptances, so a token revoked during the outage is still reported.
func TestDegradedRecordBoundedPerSubject(t *testing.T) {
	idp := authtest.NewWithConfig(authtest.Config{Algorithm: "EdDSA"})
	t.Cleanup(idp.Close)
	revs := &authfallback.MemoryRevocations{}
	var mu sync.Mutex
	var findings []authfallback.ReconcileEvent
	h := newHarness(t, idp, func(c *authfallback.Config) {
		c.MaxDegradedRecords = 10
		c.MaxDegradedRecordsPerSubject = 3
		c.Revocations = revs
		c.OnReconcile = func(ev authfallback.ReconcileEvent) { mu.Lock(); findings = append(findings, ev); mu.Unlock() }
	})
	idp.SetDown(true)
	require.Error(t, h.v.Refresh(context.Background()))
	for i := range 20 {
		_, err := h.verify(idp.Issue(jwt.MapClaims{"sub": "mallory", "jti": fmt.Sprint("m-", i)}))
		require.NoError(t, err)
	}
	_, err := h.verify(idp.Issue(jwt.MapClaims{"sub": "bob", "jti": "stolen"}))
	require.NoError(t, err)
	assert.Equal(t, 4, h.v.Status().DegradedRecords, "3 of mallory's, bob's")
	revs.RevokeID("stolen")
	idp.SetDown(false)
	require.NoError(t, h.v.Refresh(context.Background()))
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, findings, 1)
	assert.Equal(t, "bob", findings[0].Subject)
	assert.Equal(t, authfallback.RevokedID, findings[0].Finding)
	assert.Contains(t, h.audit.String(), `"not_recorded":17`)
}
