package authfallback_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/internal/httpx"
)

// The issue 4 features over real HTTP: a real IdP outage, the exchange
// endpoint and the API on a real server, a revocation list on another,
// and reconciliation when the IdP returns.
func TestFallbackEndToEnd(t *testing.T) {
	idp := newIdP(t, "ES256")
	var revMu sync.Mutex
	revDoc := `{"jti":[]}`
	revSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		revMu.Lock()
		defer revMu.Unlock()
		_, _ = io.WriteString(w, revDoc)
	}))
	defer revSrv.Close()
	list, err := authfallback.NewRevocationList(authfallback.RevocationListConfig{URL: revSrv.URL, RefreshInterval: time.Hour})
	require.NoError(t, err)
	defer list.Close()

	_, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	offline, err := authfallback.NewOfflineIssuer(authfallback.OfflineConfig{
		Issuer: "https://api.test/offline", Audience: []string{idp.Audience()}, Key: key,
		AllowedScopes: []string{"orders:read"}, AuditLog: slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	var recMu sync.Mutex
	var reconciled []authfallback.ReconcileEvent
	h := newHarness(t, idp, func(c *authfallback.Config) {
		c.Offline = offline
		c.Revocations = list
		c.Policy = authfallback.Policy{AllowedScopes: []string{"orders:read"}}
		c.OnReconcile = func(ev authfallback.ReconcileEvent) {
			recMu.Lock()
			reconciled = append(reconciled, ev)
			recMu.Unlock()
		}
	})
	mux := http.NewServeMux()
	mux.Handle("POST /token/offline", h.v.Handler(offline.ExchangeHandler()))
	mux.Handle("GET /orders", h.v.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res, _ := authfallback.FromContext(r.Context())
		_ = json.NewEncoder(w).Encode(res)
	})))
	api := httptest.NewServer(mux)
	defer api.Close()
	do := func(method, path, tok string, form url.Values) (*http.Response, []byte) {
		req, err := http.NewRequest(method, api.URL+path, strings.NewReader(form.Encode()))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := api.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, b
	}

	mallory := idp.Issue(jwt.MapClaims{"sub": "mallory", "scope": "orders:read orders:write"})
	resp, _ := do("GET", "/orders", mallory, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Empty(t, resp.Header.Get(httpx.HeaderDegraded))

	idp.SetDown(true)
	require.Error(t, h.v.Refresh(context.Background()))
	resp, body := do("GET", "/orders", mallory, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, authfallback.ReasonJWKSUnreachable, resp.Header.Get(httpx.HeaderDegraded))
	var res authfallback.Result
	require.NoError(t, json.Unmarshal(body, &res))
	assert.Equal(t, []string{"orders:read"}, res.Scopes)
	assert.Equal(t, []string{"orders:write"}, res.RemovedScopes)

	resp, body = do("POST", "/token/offline", mallory, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	var ex struct {
		AccessToken string `json:"access_token"`
	}
	require.NoError(t, json.Unmarshal(body, &ex))
	resp, _ = do("GET", "/orders", ex.AccessToken, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, authfallback.ReasonOfflineToken, resp.Header.Get(httpx.HeaderDegraded))
	resp, _ = do("POST", "/token/offline", ex.AccessToken, nil)
	assert.Equal(t, http.StatusForbidden, resp.StatusCode, "an offline token buys no other")

	revMu.Lock()
	revDoc = `{"sub":{"mallory":"` + time.Now().Add(time.Minute).UTC().Format(time.RFC3339) + `"}}`
	revMu.Unlock()
	idp.SetDown(false)
	require.NoError(t, h.v.Refresh(context.Background()))
	recMu.Lock()
	defer recMu.Unlock()
	require.Len(t, reconciled, 2, "mallory's IdP token and offline token")
	for _, ev := range reconciled {
		assert.Equal(t, "mallory", ev.Subject)
		assert.Equal(t, authfallback.RevokedSubject, ev.Finding)
	}
	resp, _ = do("GET", "/orders", mallory, nil)
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp, _ = do("GET", "/orders", ex.AccessToken, nil)
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	assert.Contains(t, h.audit.String(), "reconcile finding")
}
