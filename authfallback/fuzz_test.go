package authfallback

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// fuzzKeys returns a JWKS document with an Ed25519 and a P-256 key and
// their private keys.
func fuzzKeys(f *testing.F) ([]byte, ed25519.PrivateKey, *ecdsa.PrivateKey) {
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	var doc jwkset.JWKSMarshal
	for kid, pub := range map[string]any{"ed": ed.Public(), "ec": ec.Public()} {
		jwk, err := jwkset.NewJWKFromKey(pub, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid}})
		if err != nil {
			f.Fatal(err)
		}
		doc.Keys = append(doc.Keys, jwk.Marshal())
	}
	b, err := json.Marshal(doc)
	if err != nil {
		f.Fatal(err)
	}
	return b, ed, ec
}

func fuzzSign(f *testing.F, m jwt.SigningMethod, kid string, key any, claims jwt.MapClaims) string {
	tk := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tk.Header["kid"] = kid
	}
	s, err := tk.SignedString(key)
	if err != nil {
		f.Fatal(err)
	}
	return s
}

// FuzzVerify feeds arbitrary tokens to Verify. Whatever it accepts must be
// a token that jwt.Parse accepts with the same key, issuer and audience.
func FuzzVerify(f *testing.F) {
	doc, ed, ec := fuzzKeys(f)
	file := filepath.Join(f.TempDir(), "jwks.json")
	b, _ := json.Marshal(cacheFileDoc{Version: cacheFileVersion, Issuer: "https://idp/", JWKSURLs: []string{"https://idp/jwks"}, FetchedAt: time.Now(), JWKS: doc})
	if err := os.WriteFile(file, b, 0o600); err != nil {
		f.Fatal(err)
	}
	v, err := New(Config{Issuer: "iss", Audience: []string{"aud"}, CacheFile: file, AuditLog: slog.New(slog.DiscardHandler), MaxCachedTokens: 100})
	if err != nil {
		f.Fatal(err)
	}
	defer v.Close()
	claims := jwt.MapClaims{"iss": "iss", "aud": "aud", "exp": time.Now().Add(time.Hour).Unix(), "scope": "a b", "scp": []string{"c"}}
	f.Add(fuzzSign(f, jwt.SigningMethodEdDSA, "ed", ed, claims))
	f.Add(fuzzSign(f, jwt.SigningMethodES256, "ec", ec, claims))
	f.Add(fuzzSign(f, jwt.SigningMethodES256, "ed", ec, claims))
	f.Add(fuzzSign(f, jwt.SigningMethodNone, "ed", jwt.UnsafeAllowNoneSignatureType, claims))
	f.Add(fuzzSign(f, jwt.SigningMethodHS256, "ed", []byte(ed.Public().(ed25519.PublicKey)), claims))
	f.Add("eyJhbGciOiJFZERTQSIsImtpZCI6ImVkIn0.e30.")
	f.Add("..")
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) {
		res, err := v.Verify(context.Background(), tok)
		if err != nil {
			if res != nil {
				t.Fatal("result with error")
			}
			return
		}
		_, perr := jwt.Parse(tok, func(tk *jwt.Token) (any, error) {
			if tk.Header["kid"] == "ed" {
				return ed.Public(), nil
			}
			return ec.Public(), nil
		}, jwt.WithValidMethods([]string{"EdDSA", "ES256"}), jwt.WithIssuer("iss"), jwt.WithAudience("aud"), jwt.WithExpirationRequired())
		if perr != nil {
			t.Fatalf("Verify accepted a token jwt.Parse refuses: %v", perr)
		}
		if res.TokenHash == "" || res.Claims == nil {
			t.Fatal("incomplete result")
		}
	})
}

func checkKeySet(t *testing.T, ks *keySet, algs []string) {
	if len(ks.byKID) == 0 || len(ks.byKID) > MaxKeys {
		t.Fatalf("key count %d", len(ks.byKID))
	}
	for kid, k := range ks.byKID {
		if kid == "" || len(kid) > MaxKIDLength || kid != k.kid {
			t.Fatalf("bad kid %q", kid)
		}
		if !contains(algs, k.alg) {
			t.Fatalf("alg %q outside the allow-list", k.alg)
		}
		switch k.pub.(type) {
		case ed25519.PublicKey:
			if k.alg != "EdDSA" {
				t.Fatalf("Ed25519 key bound to %s", k.alg)
			}
		case *ecdsa.PublicKey:
			if k.alg[:2] != "ES" {
				t.Fatalf("EC key bound to %s", k.alg)
			}
		default:
			if k.alg[:2] != "RS" && k.alg[:2] != "PS" {
				t.Fatalf("%T bound to %s", k.pub, k.alg)
			}
		}
	}
	// The persisted document parses back to the same keys.
	again, err := parseKeySet(ks.doc, algs)
	if err != nil {
		t.Fatalf("persisted set does not parse: %v", err)
	}
	if len(again.byKID) != len(ks.byKID) {
		t.Fatal("persisted set differs")
	}
	for kid, k := range ks.byKID {
		if again.byKID[kid] == nil || again.byKID[kid].fp != k.fp {
			t.Fatalf("key %q differs after persisting", kid)
		}
	}
}

// FuzzParseKeySet feeds arbitrary JWKS documents to the key set parser.
func FuzzParseKeySet(f *testing.F) {
	doc, _, _ := fuzzKeys(f)
	f.Add(doc)
	f.Add([]byte(`{"keys":[]}`))
	f.Add([]byte(`{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","kid":"r","n":"AQAB","e":"AQAB"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","kid":"e","crv":"P-256","x":"AA","y":"AA"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"OKP","kid":"o","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","alg":"EdDSA","use":"sig","key_ops":["verify"]}]}`))
	f.Add([]byte(`<html>`))
	algs := []string{"RS256", "ES256", "EdDSA", "PS256", "ES384"}
	f.Fuzz(func(t *testing.T, b []byte) {
		ks, err := parseKeySet(b, algs)
		if err != nil {
			return
		}
		checkKeySet(t, ks, algs)
	})
}

// FuzzParseCacheFile feeds arbitrary CacheFile contents to the loader.
func FuzzParseCacheFile(f *testing.F) {
	doc, _, _ := fuzzKeys(f)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	good, _ := json.Marshal(cacheFileDoc{Version: cacheFileVersion, Issuer: "https://idp/", JWKSURLs: []string{"https://idp/jwks"}, FetchedAt: now.Add(-time.Hour), Source: "https://idp/jwks", JWKS: doc})
	f.Add(good)
	f.Add([]byte(`{"version":2,"issuer":"https://idp/","fetched_at":"2999-01-01T00:00:00Z","jwks":{"keys":[]}}`))
	f.Add([]byte(`{"version":2,"issuer":"https://idp/","fetched_at":"2026-01-01T00:00:00Z","jwks":null}`))
	f.Add([]byte(`{"version":2,"issuer":"https://other/","jwks_urls":["https://idp/jwks"],"fetched_at":"2026-01-01T00:00:00Z","jwks":` + string(doc) + `}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`not json`))
	algs := []string{"RS256", "ES256", "EdDSA"}
	f.Fuzz(func(t *testing.T, b []byte) {
		bind := cacheBinding{issuer: "https://idp/", jwksURLs: []string{"https://idp/jwks"}}
		ks, err := parseCacheFile(b, algs, bind, now)
		if err != nil {
			return
		}
		var d cacheFileDoc
		if json.Unmarshal(b, &d) != nil || d.Issuer != bind.issuer || !slices.Contains(d.JWKSURLs, "https://idp/jwks") {
			t.Fatalf("cache file for issuer %q / %q accepted", d.Issuer, d.JWKSURLs)
		}
		if ks.fetchedAt.After(now) || ks.fetchedAt.IsZero() {
			t.Fatalf("fetched_at %v accepted", ks.fetchedAt)
		}
		checkKeySet(t, ks, algs)
	})
}
