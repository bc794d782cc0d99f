package authfallback

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"github.com/holdfast-go/holdfast/internal/caller"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback/authtest"
)

func newTestVerifier(t *testing.T, idp *authtest.Server, mod func(*Config)) *Verifier {
	cfg := Config{
		Issuer: idp.Issuer(), Audience: []string{idp.Audience()}, JWKSURLs: []string{idp.JWKSURL()},
		AuditLog: slog.New(slog.DiscardHandler),
	}
	if mod != nil {
		mod(&cfg)
	}
	v, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = v.Close() })
	return v
}

// Offline keys verify only tokens of the offline issuer, and mark them
// degraded; the IdP's keys never verify a token that names the offline
// issuer.
func TestOfflineKeysBoundToTheirIssuer(t *testing.T) {
	idp := authtest.NewWithConfig(authtest.Config{Algorithm: "EdDSA"})
	defer idp.Close()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	o, err := NewOfflineIssuer(OfflineConfig{
		Issuer: "urn:holdfast:offline", Audience: []string{idp.Audience()}, Key: priv, KeyID: "offline-1",
		AllowedScopes: []string{"read"}, AuditLog: slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	v := newTestVerifier(t, idp, func(c *Config) {
		c.Offline = o
		c.AcceptOfflineTokensAlways = true
		c.Policy.AllowedScopes = []string{"read"}
	})
	sign := func(iss string) string {
		now := time.Now()
		tk := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
			"iss": iss, "aud": idp.Audience(), "sub": "svc", "jti": "j", "scope": "read", ClaimPrimaryIssuer: idp.Issuer(),
			"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		})
		tk.Header["kid"] = "offline-1"
		s, err := tk.SignedString(priv)
		require.NoError(t, err)
		return s
	}
	res, err := v.Verify(context.Background(), sign("urn:holdfast:offline"))
	require.NoError(t, err)
	assert.True(t, res.Degraded)
	assert.Equal(t, ReasonOfflineToken, res.Reason)

	_, err = v.Verify(context.Background(), sign(idp.Issuer()))
	assert.ErrorIs(t, err, ErrInvalidToken, "an offline key cannot mint tokens of the IdP's issuer")

	// An IdP token cannot claim the offline issuer either.
	_, err = v.Verify(context.Background(), idp.Issue(jwt.MapClaims{"iss": "urn:holdfast:offline"}))
	assert.ErrorIs(t, err, ErrInvalidToken)
	assert.Nil(t, v.fb.Load())
}

func TestCacheFileWriteFailureKeepsRefreshing(t *testing.T) {
	idp := authtest.NewWithConfig(authtest.Config{Algorithm: "EdDSA"})
	defer idp.Close()
	buf := &lockedBuf{}
	v := newTestVerifier(t, idp, func(c *Config) {
		c.CacheFile = filepath.Join(t.TempDir(), "missing-dir", "jwks.json")
		c.AuditLog = slog.New(slog.NewTextHandler(buf, nil))
	})
	_, err := v.Verify(context.Background(), idp.Issue(nil))
	require.NoError(t, err)
	// The first fetch's audit events run after New returns.
	assert.Eventually(t, func() bool { return strings.Contains(buf.String(), "cache file not written") }, 5*time.Second, 5*time.Millisecond)
}

func TestBackoffBounds(t *testing.T) {
	for attempt := 1; attempt < 20; attempt++ {
		d := backoff(attempt, time.Minute)
		want := min(time.Second<<(attempt-1), time.Minute)
		assert.GreaterOrEqual(t, d, want/2)
		assert.LessOrEqual(t, d, want)
	}
}

func TestFetchErrorMessage(t *testing.T) {
	e := &FetchError{URL: "https://x/jwks", StatusCode: 502, Err: errors.New("status 502")}
	assert.Equal(t, "authfallback: fetch https://x/jwks: status 502", e.Error())
	var fe *FetchError
	assert.True(t, errors.As(error(e), &fe))
}

type lockedBuf struct {
	mu  sync.Mutex
	buf []byte
}

func (b *lockedBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *lockedBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

func TestFromContextOfAReplayedCaller(t *testing.T) {
	_, ok := FromContext(context.Background())
	assert.False(t, ok)
	ctx := caller.NewContext(context.Background(), caller.New("https://idp.test/", "alice", []string{"orders:write"}, "jwks-unreachable", nil))
	res, ok := FromContext(ctx)
	require.True(t, ok, "a replayed write's recorded caller reads as a Result")
	assert.Equal(t, "alice", res.Subject)
	assert.Equal(t, "https://idp.test/", res.Issuer)
	assert.True(t, res.HasScope("orders:write"))
	assert.False(t, res.HasScope("admin"))
	assert.True(t, res.Degraded)
	assert.Equal(t, "jwks-unreachable", res.Reason)
	assert.Nil(t, res.Claims)
	// Another package's value is not read as a Result.
	_, ok = FromContext(caller.NewContext(context.Background(), caller.New("i", "s", nil, "", 42)))
	assert.False(t, ok)
}
