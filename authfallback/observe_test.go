package authfallback_test

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
)

func TestOnVerify(t *testing.T) {
	idp := newIdP(t, "EdDSA")
	var mu sync.Mutex
	var evs []authfallback.VerifyEvent
	h := newHarness(t, idp, func(c *authfallback.Config) {
		c.OnVerify = func(ev authfallback.VerifyEvent) { mu.Lock(); evs = append(evs, ev); mu.Unlock() }
		c.Policy.AllowedScopes = []string{"orders:read"}
	})
	tok := idp.Issue(jwt.MapClaims{"scope": "orders:read"})
	_, err := h.verify(tok)
	require.NoError(t, err)
	_, err = h.verify(tok)
	require.NoError(t, err)
	_, err = h.verify("garbage")
	require.Error(t, err)
	idp.SetDown(true)
	require.Error(t, h.v.Refresh(context.Background()))
	_, err = h.verify(tok)
	require.NoError(t, err)
	_, err = h.verify(idp.IssueWithHeader(map[string]any{"kid": "rotated-in"}, nil))
	require.ErrorIs(t, err, authfallback.ErrUnavailable)

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, evs, 5)
	want := []struct {
		outcome string
		cached  bool
	}{
		{authfallback.OutcomeOK, false}, {authfallback.OutcomeOK, true}, {authfallback.OutcomeRefused, false},
		{authfallback.OutcomeDegraded, true}, {authfallback.OutcomeUnavailable, false},
	}
	for i, w := range want {
		assert.Equal(t, w.outcome, evs[i].Outcome, i)
		assert.Equal(t, w.cached, evs[i].Cached, i)
		assert.Positive(t, evs[i].Latency, i)
	}
	assert.Equal(t, idp.Issuer(), evs[0].Issuer)
	assert.Equal(t, authfallback.ReasonJWKSUnreachable, evs[3].Reason)
	assert.Error(t, evs[2].Err)
	assert.Empty(t, evs[2].Issuer)
}

func TestWriteProblem(t *testing.T) {
	idp := newIdP(t, "EdDSA")
	var got []authfallback.Problem
	h := newHarness(t, idp, func(c *authfallback.Config) {
		c.WriteProblem = func(w http.ResponseWriter, r *http.Request, p authfallback.Problem) {
			got = append(got, p)
			w.WriteHeader(p.Status)
		}
	})
	rec, _ := h.serve("")
	assert.Equal(t, http.StatusUnauthorized, rec.Code)
	rec, _ = h.serve("garbage")
	assert.Equal(t, http.StatusUnauthorized, rec.Code)
	require.Len(t, got, 2)
	assert.Equal(t, authfallback.ProblemMissingToken, got[0].Type)
	assert.Equal(t, authfallback.ProblemInvalidToken, got[1].Type)
	assert.Contains(t, got[1].WWWAuthenticate, `error="invalid_token"`)
	assert.Empty(t, rec.Header().Get("Content-Type"), "the hook wrote the response")
}
