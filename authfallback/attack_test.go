package authfallback_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
)

// publicRSA returns the IdP's current RSA public key, as an attacker can.
func publicRSA(t *testing.T, idp *authtest.Server) *rsa.PublicKey {
	t.Helper()
	var doc jwkset.JWKSMarshal
	require.NoError(t, json.Unmarshal(idp.JWKS(), &doc))
	jwk, err := jwkset.NewJWKFromMarshal(doc.Keys[0], jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
	require.NoError(t, err)
	pub, ok := jwk.Key().(*rsa.PublicKey)
	require.True(t, ok)
	return pub
}

func baseClaims(idp *authtest.Server) jwt.MapClaims {
	return jwt.MapClaims{
		"iss": idp.Issuer(), "aud": idp.Audience(), "sub": "mallory",
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(),
	}
}

func TestAttacks(t *testing.T) {
	idp := newIdP(t, "RS256")
	h := newHarness(t, idp, nil)
	pub := publicRSA(t, idp)
	der, err := x509.MarshalPKIXPublicKey(pub)
	require.NoError(t, err)
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})

	signHS := func(secret []byte) string {
		tk := jwt.NewWithClaims(jwt.SigningMethodHS256, baseClaims(idp))
		tk.Header["kid"] = idp.KeyID()
		s, err := tk.SignedString(secret)
		require.NoError(t, err)
		return s
	}
	none := func() string {
		tk := jwt.NewWithClaims(jwt.SigningMethodNone, baseClaims(idp))
		tk.Header["kid"] = idp.KeyID()
		s, err := tk.SignedString(jwt.UnsafeAllowNoneSignatureType)
		require.NoError(t, err)
		return s
	}
	good := idp.Issue(nil)
	parts := strings.Split(good, ".")
	tamperedClaims, _ := json.Marshal(map[string]any{"iss": idp.Issuer(), "aud": idp.Audience(), "sub": "admin", "exp": time.Now().Add(time.Hour).Unix()})
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(tamperedClaims) + "." + parts[2]

	cases := map[string]string{
		"alg none":                    none(),
		"alg none, no signature part": strings.TrimSuffix(none(), "."),
		"HS256 with RSA public PEM":   signHS(pemKey),
		"HS256 with RSA modulus":      signHS(pub.N.Bytes()),
		"HS256 with DER":              signHS(der),
		"wrong iss":                   idp.Issue(jwt.MapClaims{"iss": "https://evil.example/"}),
		"missing iss":                 idp.Issue(jwt.MapClaims{"iss": nil}),
		"wrong aud":                   idp.Issue(jwt.MapClaims{"aud": "other-api"}),
		"missing aud":                 idp.Issue(jwt.MapClaims{"aud": nil}),
		"expired":                     idp.Issue(jwt.MapClaims{"exp": time.Now().Add(-time.Minute).Unix()}),
		"missing exp":                 idp.Issue(jwt.MapClaims{"exp": nil}),
		"nbf in the future":           idp.Issue(jwt.MapClaims{"nbf": time.Now().Add(time.Hour).Unix()}),
		"iat in the future":           idp.Issue(jwt.MapClaims{"iat": time.Now().Add(time.Hour).Unix()}),
		"oversized":                   idp.Issue(jwt.MapClaims{"pad": strings.Repeat("x", 9000)}),
		"missing kid":                 idp.IssueWithHeader(map[string]any{"kid": nil}, nil),
		"empty kid":                   idp.IssueWithHeader(map[string]any{"kid": ""}, nil),
		"numeric kid":                 idp.IssueWithHeader(map[string]any{"kid": 7}, nil),
		"overlong kid":                idp.IssueWithHeader(map[string]any{"kid": strings.Repeat("k", 257)}, nil),
		"unknown kid":                 idp.IssueWithHeader(map[string]any{"kid": "nope"}, nil),
		"crit header":                 idp.IssueWithHeader(map[string]any{"crit": []string{"exp"}}, nil),
		"tampered claims":             tampered,
		"signature stripped":          parts[0] + "." + parts[1] + ".",
		"two segments":                parts[0] + "." + parts[1],
		"not base64":                  "!!!.???.***",
		"empty segments":              "..",
		"garbage":                     "hello",
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := h.verify(tok)
			require.ErrorIs(t, err, authfallback.ErrInvalidToken)
			rec, res := h.serve(tok)
			assert.Nil(t, res)
			assert.Equal(t, http.StatusUnauthorized, rec.Code)
			assert.Equal(t, `Bearer error="invalid_token"`, rec.Header().Get("WWW-Authenticate"))
			assert.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"))
			assert.NotContains(t, rec.Body.String(), tok)
		})
	}
	_, err = h.verify(good)
	require.NoError(t, err, "the untouched token still verifies")
}

func TestExpiredDetail(t *testing.T) {
	idp := newIdP(t, "EdDSA")
	h := newHarness(t, idp, nil)
	tok := idp.Issue(jwt.MapClaims{"exp": time.Now().Add(-time.Minute).Unix()})
	_, err := h.verify(tok)
	assert.ErrorIs(t, err, jwt.ErrTokenExpired)
	rec, _ := h.serve(tok)
	assert.Contains(t, rec.Body.String(), "expired")
}

func TestLeeway(t *testing.T) {
	idp := newIdP(t, "EdDSA")
	h := newHarness(t, idp, func(c *authfallback.Config) { c.Leeway = 60 * time.Second })
	_, err := h.verify(idp.Issue(jwt.MapClaims{"exp": time.Now().Add(-30 * time.Second).Unix()}))
	assert.NoError(t, err)
	_, err = h.verify(idp.Issue(jwt.MapClaims{"exp": time.Now().Add(-90 * time.Second).Unix()}))
	assert.ErrorIs(t, err, jwt.ErrTokenExpired)
}

func TestAlgorithmAllowList(t *testing.T) {
	idp := newIdP(t, "ES256")
	h := newHarness(t, idp, func(c *authfallback.Config) { c.Algorithms = []string{"RS256"} })
	_, err := h.verify(idp.Issue(nil))
	assert.ErrorIs(t, err, authfallback.ErrNoKeys, "the only key is outside the allow-list: no usable key")
	assert.ErrorIs(t, h.v.Refresh(t.Context()), authfallback.ErrNoUsableKeys)
}

// keyServer serves a JWKS the test controls.
func keyServer(t *testing.T, doc string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(doc))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestKeyBoundToOneAlgorithm(t *testing.T) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	jwk, err := jwkset.NewJWKFromKey(&priv.PublicKey, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: "k1"}})
	require.NoError(t, err)
	b, err := json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{jwk.Marshal()}})
	require.NoError(t, err)
	url := keyServer(t, string(b))
	v, err := authfallback.New(authfallback.Config{
		Issuer: "iss", Audience: []string{"aud"}, JWKSURLs: []string{url},
		Algorithms: []string{"RS256", "PS256"}, AuditLog: discard(),
	})
	require.NoError(t, err)
	defer v.Close()
	sign := func(m jwt.SigningMethod) string {
		tk := jwt.NewWithClaims(m, jwt.MapClaims{"iss": "iss", "aud": "aud", "exp": time.Now().Add(time.Hour).Unix()})
		tk.Header["kid"] = "k1"
		s, err := tk.SignedString(priv)
		require.NoError(t, err)
		return s
	}
	_, err = v.Verify(t.Context(), sign(jwt.SigningMethodRS256))
	require.NoError(t, err)
	_, err = v.Verify(t.Context(), sign(jwt.SigningMethodPS256))
	assert.ErrorIs(t, err, authfallback.ErrInvalidToken, "a key without alg is bound to RS256")
}

func TestUnusableKeysDropped(t *testing.T) {
	cases := map[string]string{
		"oct only":        `{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0","alg":"HS256"}]}`,
		"enc only":        `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"e","use":"enc","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`,
		"no kid":          `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`,
		"alg mismatch":    `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"e","alg":"RS256","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`,
		"empty":           `{"keys":[]}`,
		"keys not array":  `{"keys":{}}`,
		"not json":        `<html>`,
		"unsupported crv": `{"keys":[{"kty":"OKP","crv":"X25519","kid":"x","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`,
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	jwk, err := jwkset.NewJWKFromKey(&small.PublicKey, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: "small"}})
	require.NoError(t, err)
	b, err := json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{jwk.Marshal()}})
	require.NoError(t, err)
	cases["RSA below 2048 bits"] = string(b)
	for name, doc := range cases {
		t.Run(name, func(t *testing.T) {
			v, err := authfallback.New(authfallback.Config{Issuer: "i", Audience: []string{"a"}, JWKSURLs: []string{keyServer(t, doc)}, AuditLog: discard()})
			require.NoError(t, err)
			defer v.Close()
			st := v.Status()
			assert.Zero(t, st.KeyCount)
			assert.Equal(t, authfallback.ReasonJWKSInvalid, st.Reason)
		})
	}
}

func TestConfigValidation(t *testing.T) {
	ok := authfallback.Config{Issuer: "i", Audience: []string{"a"}, JWKSURLs: []string{"https://idp.example/jwks"}}
	cases := map[string]func(*authfallback.Config){
		"no issuer":    func(c *authfallback.Config) { c.Issuer = "" },
		"no audience":  func(c *authfallback.Config) { c.Audience = nil },
		"no source":    func(c *authfallback.Config) { c.JWKSURLs = nil },
		"bad URL":      func(c *authfallback.Config) { c.JWKSURLs = []string{"ftp://x"} },
		"HS256":        func(c *authfallback.Config) { c.Algorithms = []string{"RS256", "HS256"} },
		"none":         func(c *authfallback.Config) { c.Algorithms = []string{"none"} },
		"leeway > 60s": func(c *authfallback.Config) { c.Leeway = 61 * time.Second },
		"neg leeway":   func(c *authfallback.Config) { c.Leeway = -time.Second },
	}
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			c := ok
			mod(&c)
			_, err := authfallback.New(c)
			assert.Error(t, err)
		})
	}
}

func TestBearerToken(t *testing.T) {
	cases := []struct {
		header []string
		tok    string
		ok     bool
	}{
		{[]string{"Bearer abc"}, "abc", true},
		{[]string{"bearer abc"}, "abc", true},
		{[]string{"BEARER   abc"}, "abc", true},
		{[]string{"Basic abc"}, "", false},
		{[]string{"Bearer"}, "", false},
		{[]string{"Bearer "}, "", false},
		{[]string{"Bearer a b"}, "", false},
		{[]string{"Bearer a, Bearer b"}, "", false},
		{[]string{"Bearer a,b"}, "", false},
		{[]string{"Bearer a\tb"}, "", false},
		{[]string{"Bearer ab\t"}, "", false},
		{[]string{"Bearer a", "Bearer b"}, "", false},
		{nil, "", false},
	}
	for _, c := range cases {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		for _, h := range c.header {
			r.Header.Add("Authorization", h)
		}
		tok, ok := authfallback.BearerToken(r)
		assert.Equal(t, c.ok, ok, "%q", c.header)
		assert.Equal(t, c.tok, tok, "%q", c.header)
	}
}
