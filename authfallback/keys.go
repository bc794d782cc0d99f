package authfallback

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/MicahParks/jwkset"
)

// ErrNoUsableKeys is the error of a key set document that parsed but holds no
// key the Verifier can use (empty, only "oct" or encryption keys, algorithms
// outside the allow-list, ...). Such a set never replaces the last-known-good
// set.
var ErrNoUsableKeys = errors.New("authfallback: key set has no usable key")

// minRSABits and maxRSABits bound the RSA moduli accepted from a key set
// (the upper bound keeps a hostile key from making verification expensive).
const (
	minRSABits = 2048
	maxRSABits = 8192
)

// verifyKey is one public key, bound to one algorithm and found by its kid.
type verifyKey struct {
	kid string
	alg string
	pub any
	// fp identifies the key material and binding; two keys with the same fp
	// are the same key.
	fp string
	// issuer, if set, is the "iss" a token verified by this key must carry
	// instead of Config.Issuer (trusted sources other than the JWKS, e.g.
	// offline keys).
	issuer string
	// reason, if set, marks every token this key verifies as degraded with
	// this reason (e.g. "offline-token").
	reason string
	// offline, if set, is the issuer of this offline key, whose claims
	// policy (checkOfflineClaims) every token it verifies must pass.
	offline *OfflineIssuer
}

// keySet is an immutable set of verification keys, swapped atomically.
type keySet struct {
	byKID map[string]*verifyKey
	// doc is the canonical JWKS JSON of the public keys, as persisted.
	doc []byte
	// fetchedAt is when the set was fetched from the IdP (kept across
	// restarts through the CacheFile).
	fetchedAt time.Time
	// source is the URL the set came from.
	source string
	// fromFile is true for a set loaded from the CacheFile: no fetch of
	// this process has confirmed it yet.
	fromFile bool
}

func (ks *keySet) lookup(kid string) *verifyKey {
	if ks == nil {
		return nil
	}
	return ks.byKID[kid]
}

// parseKeySet parses a JWKS document into the keys usable under the
// allow-list algs. Unusable keys are skipped; a document with none left
// fails with ErrNoUsableKeys. The result's doc holds only the public
// parameters of the kept keys.
func parseKeySet(doc []byte, algs []string) (*keySet, error) {
	if len(doc) > MaxJWKSSize {
		return nil, fmt.Errorf("authfallback: key set larger than %d bytes", MaxJWKSSize)
	}
	var m jwkset.JWKSMarshal
	if err := json.Unmarshal(doc, &m); err != nil {
		return nil, fmt.Errorf("authfallback: key set is not a JWKS document: %w", err)
	}
	ks := &keySet{byKID: make(map[string]*verifyKey, min(len(m.Keys), MaxKeys))}
	kept := make([]jwkset.JWKMarshal, 0, min(len(m.Keys), MaxKeys))
	for _, km := range m.Keys {
		if len(ks.byKID) >= MaxKeys {
			break
		}
		k, pm, ok := parseKey(km, algs)
		if !ok {
			continue
		}
		if _, dup := ks.byKID[k.kid]; dup {
			// Two keys under one kid: keep the first, never guess.
			continue
		}
		ks.byKID[k.kid] = k
		kept = append(kept, pm)
	}
	if len(ks.byKID) == 0 {
		return nil, ErrNoUsableKeys
	}
	out, err := json.Marshal(jwkset.JWKSMarshal{Keys: kept})
	if err != nil {
		return nil, fmt.Errorf("authfallback: encoding key set: %w", err)
	}
	ks.doc = out
	return ks, nil
}

// parseKey turns one JWK into a verifyKey, or reports it unusable.
func parseKey(km jwkset.JWKMarshal, algs []string) (*verifyKey, jwkset.JWKMarshal, bool) {
	if km.KID == "" || len(km.KID) > MaxKIDLength {
		return nil, jwkset.JWKMarshal{}, false
	}
	if km.USE != "" && km.USE != jwkset.UseSig {
		return nil, jwkset.JWKMarshal{}, false
	}
	if len(km.KEYOPS) > 0 && !hasVerifyOp(km.KEYOPS) {
		return nil, jwkset.JWKMarshal{}, false
	}
	// Only the public parameters: no private parts, no certificates to
	// fetch or chase.
	pm := jwkset.JWKMarshal{KTY: km.KTY, USE: km.USE, ALG: km.ALG, KID: km.KID, CRV: km.CRV, X: km.X, Y: km.Y, N: km.N, E: km.E}
	var alg string
	switch pm.KTY {
	case jwkset.KtyRSA:
		alg = "RS256"
	case jwkset.KtyEC:
		switch pm.CRV {
		case jwkset.CrvP256:
			alg = "ES256"
		case jwkset.CrvP384:
			alg = "ES384"
		case jwkset.CrvP521:
			alg = "ES512"
		default:
			return nil, jwkset.JWKMarshal{}, false
		}
	case jwkset.KtyOKP:
		if pm.CRV != jwkset.CrvEd25519 {
			return nil, jwkset.JWKMarshal{}, false
		}
		alg = "EdDSA"
	default: // "oct" and anything else: never.
		return nil, jwkset.JWKMarshal{}, false
	}
	if pm.ALG != "" {
		a := string(pm.ALG)
		if !algFitsKey(a, pm) {
			return nil, jwkset.JWKMarshal{}, false
		}
		alg = a
	}
	if !contains(algs, alg) {
		return nil, jwkset.JWKMarshal{}, false
	}
	jwk, err := jwkset.NewJWKFromMarshal(pm, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
	if err != nil {
		return nil, jwkset.JWKMarshal{}, false
	}
	pub := jwk.Key()
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits || k.N.BitLen() > maxRSABits || k.E < 3 || k.E%2 == 0 || k.E > 1<<31-1 {
			return nil, jwkset.JWKMarshal{}, false
		}
	case *ecdsa.PublicKey:
		if !ecOnCurve(k) {
			return nil, jwkset.JWKMarshal{}, false
		}
	case ed25519.PublicKey:
	default:
		return nil, jwkset.JWKMarshal{}, false
	}
	fp := strings.Join([]string{alg, string(pm.KTY), string(pm.CRV), pm.N, pm.E, pm.X, pm.Y}, ".")
	return &verifyKey{kid: pm.KID, alg: alg, pub: pub, fp: fp}, pm, true
}

func ecOnCurve(k *ecdsa.PublicKey) bool {
	// ecdsa.PublicKey.ECDH validates the point for the NIST curves.
	switch k.Curve {
	case elliptic.P256(), elliptic.P384(), elliptic.P521():
	default:
		return false
	}
	_, err := k.ECDH()
	return err == nil
}

// algFitsKey reports whether a JWK's "alg" can be used with its key type.
func algFitsKey(alg string, m jwkset.JWKMarshal) bool {
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		return m.KTY == jwkset.KtyRSA
	case "ES256":
		return m.KTY == jwkset.KtyEC && m.CRV == jwkset.CrvP256
	case "ES384":
		return m.KTY == jwkset.KtyEC && m.CRV == jwkset.CrvP384
	case "ES512":
		return m.KTY == jwkset.KtyEC && m.CRV == jwkset.CrvP521
	case "EdDSA":
		return m.KTY == jwkset.KtyOKP && m.CRV == jwkset.CrvEd25519
	}
	return false
}

func hasVerifyOp(ops []jwkset.KEYOPS) bool {
	for _, o := range ops {
		if o == jwkset.KeyOpsVerify {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
