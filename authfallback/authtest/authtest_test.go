package authtest_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/holdfast-go/holdfast/authfallback/authtest"
)

func get(t *testing.T, c *http.Client, url string) (*http.Response, []byte, error) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, b, nil
}

func TestIssueVerifiesAgainstJWKS(t *testing.T) {
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			idp := authtest.NewWithConfig(authtest.Config{Algorithm: alg})
			defer idp.Close()
			_, body, err := get(t, http.DefaultClient, idp.JWKSURL())
			require.NoError(t, err)
			kf, err := keyfunc.NewJWKSetJSON(body)
			require.NoError(t, err)
			raw := idp.Issue(jwt.MapClaims{"scope": "a b"})
			tok, err := jwt.Parse(raw, kf.Keyfunc, jwt.WithIssuer(idp.Issuer()), jwt.WithAudience(idp.Audience()))
			require.NoError(t, err)
			assert.Equal(t, alg, tok.Method.Alg())
			assert.Equal(t, idp.KeyID(), tok.Header["kid"])
			assert.Equal(t, "a b", tok.Claims.(jwt.MapClaims)["scope"])
		})
	}
}

func TestIssueRemovesNilClaimsAndHeaders(t *testing.T) {
	idp := authtest.NewWithConfig(authtest.Config{Algorithm: "EdDSA"})
	defer idp.Close()
	raw := idp.IssueWithHeader(map[string]any{"kid": nil}, jwt.MapClaims{"exp": nil})
	tok, _, err := jwt.NewParser().ParseUnverified(raw, jwt.MapClaims{})
	require.NoError(t, err)
	assert.NotContains(t, tok.Header, "kid")
	assert.NotContains(t, tok.Claims.(jwt.MapClaims), "exp")
}

func TestRotate(t *testing.T) {
	idp := authtest.NewWithConfig(authtest.Config{Algorithm: "ES256"})
	defer idp.Close()
	old := idp.KeyID()
	kid := idp.Rotate()
	assert.NotEqual(t, old, kid)
	assert.Equal(t, kid, idp.KeyID())
	var doc struct {
		Keys []struct {
			KID string `json:"kid"`
		} `json:"keys"`
	}
	require.NoError(t, json.Unmarshal(idp.JWKS(), &doc))
	require.Len(t, doc.Keys, 2)
	assert.Equal(t, kid, doc.Keys[0].KID)
	idp.RetireOldKeys()
	require.NoError(t, json.Unmarshal(idp.JWKS(), &doc))
	require.Len(t, doc.Keys, 1)
	assert.Equal(t, kid, doc.Keys[0].KID)
}

func TestSwitches(t *testing.T) {
	idp := authtest.NewWithConfig(authtest.Config{Algorithm: "EdDSA", ExtraKeys: 2})
	defer idp.Close()
	c := &http.Client{Timeout: 2 * time.Second}

	resp, body, err := get(t, c, idp.JWKSURL())
	require.NoError(t, err)
	assert.Equal(t, 200, resp.StatusCode)
	assert.Contains(t, string(body), idp.KeyID())
	assert.EqualValues(t, 1, idp.JWKSHits())

	idp.SetEmptyKeySet(true)
	_, body, err = get(t, c, idp.JWKSURL())
	require.NoError(t, err)
	assert.JSONEq(t, `{"keys":[]}`, string(body))

	idp.SetGarbage(true)
	_, body, err = get(t, c, idp.JWKSURL())
	require.NoError(t, err)
	assert.False(t, json.Valid(body))

	idp.SetFail5xx(true)
	resp, _, err = get(t, c, idp.JWKSURL())
	require.NoError(t, err)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)

	idp.Reset()
	idp.SetDown(true)
	_, _, err = get(t, c, idp.JWKSURL())
	require.Error(t, err)
	assert.ErrorContains(t, err, "refused")
	hits := idp.JWKSHits()
	idp.SetDown(false)
	resp, _, err = get(t, c, idp.JWKSURL())
	require.NoError(t, err)
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, hits+1, idp.JWKSHits())

	idp.SetSlow(time.Second)
	_, _, err = get(t, &http.Client{Timeout: 50 * time.Millisecond}, idp.JWKSURL())
	require.Error(t, err)
}

func TestTokenEndpointClientCredentials(t *testing.T) {
	idp := authtest.New()
	defer idp.Close()
	cc := clientcredentials.Config{ClientID: idp.ClientID(), ClientSecret: idp.ClientSecret(), TokenURL: idp.TokenURL(), Scopes: []string{"read", "write"}}
	tok, err := cc.Token(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "Bearer", tok.Type())
	assert.WithinDuration(t, time.Now().Add(time.Hour), tok.Expiry, time.Minute)
	parsed, _, err := jwt.NewParser().ParseUnverified(tok.AccessToken, jwt.MapClaims{})
	require.NoError(t, err)
	claims := parsed.Claims.(jwt.MapClaims)
	assert.Equal(t, "read write", claims["scope"])
	assert.Equal(t, idp.ClientID(), claims["sub"])
	assert.EqualValues(t, 1, idp.TokenHits())

	bad := cc
	bad.ClientSecret = "wrong"
	_, err = bad.Token(context.Background())
	require.Error(t, err)

	idp.SetFail5xx(true)
	_, err = cc.Token(context.Background())
	require.Error(t, err)
}

func TestInProcessTransport(t *testing.T) {
	s := authtest.NewWithConfig(authtest.Config{Algorithm: "EdDSA"})
	defer s.Close()
	c := &http.Client{Transport: s.InProcessTransport()}
	resp, err := c.Get("http://ignored.example" + authtest.JWKSPath)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.JSONEq(t, string(s.JWKS()), string(body))

	s.SetFail5xx(true)
	resp, err = c.Get(s.JWKSURL())
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)

	s.SetDown(true)
	_, err = c.Get(s.JWKSURL())
	assert.Error(t, err)
	s.Reset()
	resp, err = c.Get(s.JWKSURL())
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
}

func TestReplaceKeyKeepsKIDChangesKey(t *testing.T) {
	s := authtest.NewWithConfig(authtest.Config{Algorithm: "EdDSA"})
	defer s.Close()
	kid, before := s.KeyID(), string(s.JWKS())
	assert.Equal(t, kid, s.ReplaceKey())
	assert.Equal(t, kid, s.KeyID())
	assert.NotEqual(t, before, string(s.JWKS()))
	assert.Contains(t, string(s.JWKS()), kid)
}
