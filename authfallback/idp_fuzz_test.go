package authfallback

import (
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/holdfast-go/holdfast/authfallback/authtest"
)

// The fuzz targets of the parsers of outside input added with issue 18:
// the discovery document (and its cache file), the introspection answer,
// the DPoP proof and the Authorization header.

func FuzzParseDiscoveryDocument(f *testing.F) {
	const iss = "https://idp.example.com/"
	f.Add([]byte(`{"issuer":"https://idp.example.com/","jwks_uri":"https://idp.example.com/jwks"}`))
	f.Add([]byte(`{"issuer":"https://idp.example.com/","jwks_uri":"http://127.0.0.1:1/jwks","introspection_endpoint":"https://x/i"}`))
	f.Add([]byte(`{"issuer":"https://idp.example.com","jwks_uri":"https://idp.example.com/jwks"}`))
	f.Add([]byte(`{"issuer":"https://idp.example.com/","jwks_uri":"http://evil.example/jwks"}`))
	f.Add([]byte(`{"issuer":"https://idp.example.com/","jwks_uri":"https://a/j"} {}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"issuer":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		doc, err := parseDiscoveryDocument(b, iss)
		if err != nil {
			if doc != nil {
				t.Fatal("document and error")
			}
			return
		}
		if doc.Issuer != iss {
			t.Fatalf("issuer %q accepted", doc.Issuer)
		}
		if checkFetchURL(doc.JWKSURI) != nil {
			t.Fatalf("jwks_uri %q accepted", doc.JWKSURI)
		}
		if doc.IntrospectionEndpoint != "" && checkFetchURL(doc.IntrospectionEndpoint) != nil {
			t.Fatalf("introspection_endpoint %q accepted", doc.IntrospectionEndpoint)
		}
		// What was accepted survives the cache file.
		dir := t.TempDir()
		doc.FetchedAt = time.Now()
		if err := writeDiscoveryFile(dir+"/d", doc, b); err != nil {
			t.Fatal(err)
		}
		back, _, err := readDiscoveryFile(dir+"/d", iss, time.Now())
		if err != nil || back.JWKSURI != doc.JWKSURI {
			t.Fatalf("cache file round trip: %v", err)
		}
	})
}

func FuzzParseDiscoveryFile(f *testing.F) {
	const iss = "https://idp.example.com/"
	f.Add([]byte(`{"version":1,"issuer":"https://idp.example.com/","fetched_at":"2026-01-01T00:00:00Z","document":{"issuer":"https://idp.example.com/","jwks_uri":"https://idp.example.com/jwks"}}`))
	f.Add([]byte(`{"version":1,"issuer":"https://other/","fetched_at":"2026-01-01T00:00:00Z","document":{}}`))
	f.Add([]byte(`{"version":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
		doc, _, err := parseDiscoveryFile(b, iss, now)
		if err != nil {
			return
		}
		if doc.Issuer != iss || checkFetchURL(doc.JWKSURI) != nil || doc.FetchedAt.After(now.Add(maxClockSkewCacheFile)) {
			t.Fatalf("accepted %+v", doc)
		}
	})
}

func FuzzIntrospectionResponse(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	cfg := &Config{Issuer: "https://idp.example.com/", Audience: []string{"api"}}
	f.Add([]byte(`{"active":true,"sub":"a","aud":"api","exp":1800000100,"scope":"read write"}`))
	f.Add([]byte(`{"active":true,"sub":"a","aud":["x","api"],"exp":1800000100,"iss":"https://idp.example.com/","cnf":{"jkt":"abc"}}`))
	f.Add([]byte(`{"active":false}`))
	f.Add([]byte(`{"active":"true","sub":"a","aud":"api","exp":1800000100}`))
	f.Add([]byte(`{"active":true,"sub":"a","aud":"api","exp":1e400}`))
	f.Add([]byte(`{"active":true,"sub":"a","aud":"api","exp":1800000100,"token_type":"refresh_token"}`))
	f.Add([]byte(`{"active":true,"active":false}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ans, err := parseIntrospectionResponse(b)
		if err != nil {
			return
		}
		for _, allowNoAud := range []bool{false, true} {
			res, err := checkIntrospectionClaims(ans.Claims, cfg, allowNoAud, sha256.Sum256(b), now)
			if err != nil {
				continue
			}
			if !ans.Active {
				// checkIntrospectionClaims is only reached for active
				// answers; nothing more to say here.
				continue
			}
			if res.Issuer != cfg.Issuer || res.Subject == "" || !res.ExpiresAt.After(now) {
				t.Fatalf("accepted %+v", res)
			}
			if aud, present := res.Claims["aud"]; present || !allowNoAud {
				ok := false
				switch a := aud.(type) {
				case string:
					ok = a == "api"
				case []any:
					for _, x := range a {
						ok = ok || x == "api"
					}
				}
				if !ok {
					t.Fatalf("audience %v accepted", aud)
				}
			}
		}
	})
}

func FuzzDPoPProof(f *testing.F) {
	key := authtest.NewDPoPKey("ES256")
	const tok = "access-token"
	const u = "https://api.example.com/orders"
	f.Add(key.Proof("GET", u, tok), "GET", "/orders")
	f.Add(key.Proof("POST", u, tok), "GET", "/orders")
	f.Add(key.ProofWith(map[string]any{"jwk": key.PrivateJWK()}, jwt.MapClaims{"htm": "GET", "htu": u}, tok), "GET", "/orders")
	f.Add(key.ProofWith(map[string]any{"typ": "jwt"}, jwt.MapClaims{"htm": "GET", "htu": u}, tok), "GET", "/orders")
	f.Add("eyJhbGciOiJub25lIiwidHlwIjoiZHBvcCtqd3QifQ.eyJqdGkiOiIxIn0.", "GET", "/")
	f.Add("a.b.c", "GET", "/")
	f.Fuzz(func(t *testing.T, proof, method, path string) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t?#") || method == "" || strings.ContainsAny(method, " \r\n\t") {
			return
		}
		r, err := http.NewRequest(method, "https://api.example.com"+path, nil)
		if err != nil {
			return
		}
		r.Host = "api.example.com"
		r.TLS = nil
		d := newDPoPChecker(&DPoPConfig{RequestURL: func(r *http.Request) string { return "https://" + r.Host + r.URL.EscapedPath() }}, 0)
		err = d.check(r, proof, tok, key.Thumbprint(), time.Now())
		if err == nil {
			p, perr := d.parse(proof)
			if perr != nil || p.Thumbprint != key.Thumbprint() || p.Method != method || !sameHTU(p.URL, "https://api.example.com"+path) {
				t.Fatalf("accepted %+v (%v)", p, perr)
			}
			// And never twice.
			if d.check(r, proof, tok, key.Thumbprint(), time.Now()) == nil {
				t.Fatal("replay accepted")
			}
		}
	})
}

func FuzzRequestToken(f *testing.F) {
	f.Add("Bearer abc")
	f.Add("DPoP abc.def.ghi")
	f.Add("dpop  abc")
	f.Add("DPoP a,b")
	f.Add("Basic abc")
	f.Fuzz(func(t *testing.T, h string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", h)
		tok, dpop, ok := requestToken(r)
		if !ok {
			return
		}
		if tok == "" || strings.ContainsAny(tok, " \t,") {
			t.Fatalf("token %q from %q", tok, h)
		}
		scheme := strings.ToLower(strings.SplitN(h, " ", 2)[0])
		if dpop != (scheme == "dpop") || (!dpop && scheme != "bearer") {
			t.Fatalf("scheme of %q: dpop=%v", h, dpop)
		}
	})
}
