package redisstore_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
	"github.com/holdfast-go/holdfast/redisstore"
)

var _ authfallback.DPoPReplayCache = (*redisstore.DPoPReplayCache)(nil)

func TestDPoPReplayCacheConformance(t *testing.T) {
	c := newClient(t)
	authtest.RunDPoPReplayCache(t, func(t *testing.T) authtest.DPoPReplayCache {
		return redisstore.NewDPoPReplayCache(c, newPrefix(t, c))
	})
}

// Two replicas share the replay cache: a proof used on one is refused on
// the other.
func TestDPoPReplayAcrossReplicas(t *testing.T) {
	c := newClient(t)
	cache := redisstore.NewDPoPReplayCache(c, newPrefix(t, c))
	idp := authtest.New()
	t.Cleanup(idp.Close)
	var replicas []http.Handler
	for range 2 {
		v, err := authfallback.New(authfallback.Config{
			Issuer: idp.Issuer(), Audience: []string{idp.Audience()}, JWKSURLs: []string{idp.JWKSURL()},
			AuditLog: slog.New(slog.DiscardHandler), DPoP: authfallback.DPoPConfig{ReplayCache: cache},
		})
		require.NoError(t, err)
		t.Cleanup(func() { _ = v.Close() })
		replicas = append(replicas, v.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
	}
	key := authtest.NewDPoPKey("")
	tok := idp.Issue(jwt.MapClaims{"cnf": key.Confirmation()})
	const url = "https://api.example.com/orders"
	proof := key.Proof("GET", url, tok)
	serve := func(h http.Handler) int {
		req := httptest.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "DPoP "+tok)
		req.Header.Set("DPoP", proof)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	assert.Equal(t, http.StatusOK, serve(replicas[0]))
	assert.Equal(t, http.StatusUnauthorized, serve(replicas[1]), "replayed on another replica")
}
