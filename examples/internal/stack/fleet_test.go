package stack

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/degrade"
)

// Two replicas share Config.AuthState and Config.Overrides: the second,
// started on an empty disk during an IdP outage, verifies at once with the
// keys the first shared, gives the grace window to a token only the first
// saw valid, trusts the first's offline tokens verify-only (OfflineJWKSURL,
// no private key, no exchange route), and follows a mode forced through
// the first.
func TestFleetSharesAuthStateOverridesAndOfflineTrust(t *testing.T) {
	e := newEnv(t)
	e.cfg.AuthState = authfallback.NewMemoryState()
	e.cfg.StateFlushInterval = 20 * time.Millisecond
	e.cfg.Overrides = degrade.NewMemoryOverrides()
	e.cfg.OverridePoll = 20 * time.Millisecond
	_, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	first := e.cfg
	first.OfflineKey = key
	a, err := New(first)
	require.NoError(t, err)
	t.Cleanup(a.Close)
	jwks := httptest.NewServer(a.OfflineJWKS())
	t.Cleanup(jwks.Close)

	// A token that expires during the outage, seen valid by a only.
	exp := time.Now().Add(2 * time.Second).Truncate(time.Second).Add(time.Second)
	short := e.idp.Issue(jwt.MapClaims{"sub": "bob", "scope": "read write", "exp": exp.Unix()})
	primary := e.token
	e.token = short
	require.Equal(t, http.StatusOK, e.do(t, a, http.MethodGet, "/items/1", "", "").StatusCode)
	e.token = primary

	e.idp.SetDown(true)
	require.Eventually(t, func() bool { return a.Verifier.Status().Fallback }, 5*time.Second, 20*time.Millisecond)
	resp := e.do(t, a, http.MethodPost, OfflineTokenPath, "", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var body struct {
		AccessToken string `json:"access_token"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	offline := body.AccessToken

	second := e.cfg
	second.CacheFile = filepath.Join(t.TempDir(), "empty", "jwks.json") // an empty disk
	second.OfflineJWKSURL = jwks.URL
	b, err := New(second)
	require.NoError(t, err)
	t.Cleanup(b.Close)
	assert.Positive(t, b.Verifier.Status().KeyCount, "keys from the shared state")
	assert.Nil(t, b.OfflineJWKS(), "verify-only: nothing to publish")
	assert.Equal(t, http.StatusOK, e.do(t, b, http.MethodGet, "/items/1", "", "").StatusCode, "first request verified")
	require.Eventually(t, func() bool { return b.Verifier.Status().Fallback }, 5*time.Second, 20*time.Millisecond)

	e.token = offline
	resp = e.do(t, b, http.MethodGet, "/items/2", "", "")
	assert.Equal(t, http.StatusOK, resp.StatusCode, "a's offline token, verify-only on b")
	assert.Equal(t, authfallback.ReasonOfflineToken, resp.Header.Get(degrade.HeaderDegraded))
	e.token = primary
	assert.NotEqual(t, http.StatusOK, e.do(t, b, http.MethodPost, OfflineTokenPath, "", "").StatusCode, "b mints no offline token")

	time.Sleep(time.Until(exp.Add(200 * time.Millisecond)))
	e.token = short
	resp = e.do(t, b, http.MethodGet, "/items/3", "", "")
	assert.Equal(t, http.StatusOK, resp.StatusCode, "grace on b for a token only a saw valid")
	assert.Equal(t, authfallback.ReasonExpiredGrace, resp.Header.Get(degrade.HeaderDegraded))
	e.token = primary

	// An operator forces read-only through a's admin handler: b follows,
	// and both are released.
	admin := httptest.NewServer(a.Controller.AdminHandler())
	t.Cleanup(admin.Close)
	put := func(body string) {
		req, _ := http.NewRequest(http.MethodPut, admin.URL, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}
	put(`{"mode":"read-only","reason":"test"}`)
	require.Eventually(t, func() bool { return b.Controller.Mode() == degrade.ReadOnly }, 2*time.Second, 10*time.Millisecond)
	put(`{"mode":"auto"}`)
	require.Eventually(t, func() bool { return b.Controller.Mode() != degrade.ReadOnly }, 2*time.Second, 10*time.Millisecond)
}

// A revocation list that answers with a new revocation while the verifier
// is in fallback mode, its key refresh backed off far (KeyRefresh 1 h),
// makes the verifier refresh its keys at once: the replica leaves fallback
// mode, so the grace windows and offline tokens that the revoked subject
// may hold end with it.
func TestNewRevocationEndsFallbackAtOnce(t *testing.T) {
	e := newEnv(t)
	list := &revocationList{sub: map[string]string{}}
	lsrv := httptest.NewServer(list)
	t.Cleanup(lsrv.Close)
	e.cfg.RevocationURL = lsrv.URL
	e.cfg.KeyRefresh = time.Hour
	s := e.start(t)
	require.NotNil(t, s.Revocations)
	ctx := context.Background()

	e.idp.SetDown(true)
	list.mu.Lock()
	list.down = true
	list.sub["alice"] = time.Now().UTC().Format(time.RFC3339Nano)
	list.mu.Unlock()
	for range 13 { // the next key refresh is about half an hour away
		require.Error(t, s.Verifier.Refresh(ctx))
	}
	require.True(t, s.Verifier.Status().Fallback)

	e.idp.SetDown(false)
	list.mu.Lock()
	list.down = false
	list.mu.Unlock()
	require.NoError(t, s.Revocations.Refresh(ctx))
	require.Eventually(t, func() bool { return !s.Verifier.Status().Fallback }, 3*time.Second, 10*time.Millisecond,
		"the list answered: the keys are refreshed now, not after the backoff")
	assert.Equal(t, http.StatusUnauthorized, e.do(t, s, http.MethodGet, "/items/1", "", "").StatusCode, "alice is revoked")
}
