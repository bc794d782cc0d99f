package authtest

import (
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// DPoPKey is a client's DPoP key pair (RFC 9449), to bind tokens to and
// sign proofs with. It is safe for concurrent use.
type DPoPKey struct {
	alg    string
	method jwt.SigningMethod
	priv   crypto.Signer
	jwk    map[string]any
	jkt    string
}

// NewDPoPKey returns a new DPoP key for alg: "ES256" (if empty), "EdDSA" or
// "RS256". It panics on another algorithm.
func NewDPoPKey(alg string) *DPoPKey {
	if alg == "" {
		alg = "ES256"
	}
	k := mustKey(alg)
	pub := map[string]any{}
	b, _ := json.Marshal(jwkset.JWKMarshal{KTY: k.jwk.KTY, CRV: k.jwk.CRV, X: k.jwk.X, Y: k.jwk.Y, N: k.jwk.N, E: k.jwk.E})
	_ = json.Unmarshal(b, &pub)
	// RFC 7638 §3: the required members, in lexicographic order, no
	// whitespace (written out by hand here, independently of authfallback).
	var canon string
	switch k.jwk.KTY {
	case jwkset.KtyEC:
		canon = `{"crv":"` + string(k.jwk.CRV) + `","kty":"EC","x":"` + k.jwk.X + `","y":"` + k.jwk.Y + `"}`
	case jwkset.KtyRSA:
		canon = `{"e":"` + k.jwk.E + `","kty":"RSA","n":"` + k.jwk.N + `"}`
	case jwkset.KtyOKP:
		canon = `{"crv":"` + string(k.jwk.CRV) + `","kty":"OKP","x":"` + k.jwk.X + `"}`
	}
	sum := sha256.Sum256([]byte(canon))
	return &DPoPKey{alg: alg, method: k.method, priv: k.priv, jwk: pub, jkt: base64.RawURLEncoding.EncodeToString(sum[:])}
}

// Thumbprint is the RFC 7638 thumbprint of the public key, the "jkt" a
// bound token carries in its "cnf" claim.
func (k *DPoPKey) Thumbprint() string { return k.jkt }

// Confirmation returns the "cnf" claim that binds a token to k.
func (k *DPoPKey) Confirmation() map[string]any { return map[string]any{"jkt": k.jkt} }

// Proof returns a fresh DPoP proof for a request (method, url) that
// presents accessToken: typ dpop+jwt, the public jwk, a random jti, iat now,
// htm, htu and ath.
func (k *DPoPKey) Proof(method, url, accessToken string) string {
	return k.ProofWith(nil, jwt.MapClaims{"htm": method, "htu": url}, accessToken)
}

// ProofWith is Proof with the header and claims given overriding the
// defaults (a value set to nil is left out). accessToken "" leaves ath out.
func (k *DPoPKey) ProofWith(header map[string]any, claims jwt.MapClaims, accessToken string) string {
	c := jwt.MapClaims{"jti": randomID(), "iat": time.Now().Unix()}
	if accessToken != "" {
		sum := sha256.Sum256([]byte(accessToken))
		c["ath"] = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	return sign(k.method, k.priv, map[string]any{"typ": "dpop+jwt", "jwk": k.jwk}, header, c, claims)
}

// PrivateJWK returns the key's JWK with its private parameters, to test
// that a proof carrying them is refused.
func (k *DPoPKey) PrivateJWK() map[string]any {
	j, err := jwkset.NewJWKFromKey(k.priv, jwkset.JWKOptions{Marshal: jwkset.JWKMarshalOptions{Private: true}})
	if err != nil {
		panic("authtest: " + err.Error())
	}
	b, _ := json.Marshal(j.Marshal())
	m := map[string]any{}
	_ = json.Unmarshal(b, &m)
	return m
}
