package authfallback_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"

	"github.com/golang-jwt/jwt/v5"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
)

// Callers exchange a verified primary token for an offline token, which
// the Verifier accepts only in fallback mode.
func ExampleOfflineIssuer() {
	idp := authtest.NewWithConfig(authtest.Config{Algorithm: "EdDSA"})
	defer idp.Close()
	quiet := slog.New(slog.DiscardHandler)

	_, key, _ := ed25519.GenerateKey(rand.Reader)
	offline, err := authfallback.NewOfflineIssuer(authfallback.OfflineConfig{
		Issuer:        "https://api.example.com/offline",
		Audience:      []string{idp.Audience()},
		Key:           key,
		AllowedScopes: []string{"orders:read"},
		AuditLog:      quiet,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	v, err := authfallback.New(authfallback.Config{
		Issuer:   idp.Issuer(),
		Audience: []string{idp.Audience()},
		JWKSURLs: []string{idp.JWKSURL()},
		Offline:  offline,
		Policy:   authfallback.Policy{AllowedScopes: []string{"orders:read"}},
		AuditLog: quiet,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer v.Close()

	mux := http.NewServeMux()
	mux.Handle("POST /token/offline", v.Handler(offline.ExchangeHandler()))
	mux.Handle("GET /orders", v.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res, _ := authfallback.FromContext(r.Context())
		fmt.Fprintln(w, res.Reason, strings.Join(res.Scopes, ","))
	})))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	call := func(method, path, token string, form url.Values) (*http.Response, string) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(form.Encode()))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	// While the IdP is up, a caller gets an offline token for later.
	primary := idp.Issue(jwt.MapClaims{"sub": "alice", "scope": "orders:read orders:write"})
	resp, body := call("POST", "/token/offline", primary, url.Values{"scope": {"orders:read orders:write"}})
	var tok struct {
		AccessToken string `json:"access_token"`
		Scope       string `json:"scope"`
	}
	_ = json.Unmarshal([]byte(body), &tok)
	fmt.Println("exchange:", resp.StatusCode, tok.Scope)

	resp, _ = call("GET", "/orders", tok.AccessToken, nil)
	fmt.Println("IdP up:", resp.StatusCode)

	idp.SetDown(true)
	_ = v.Refresh(context.Background()) // fails: fallback mode
	resp, body = call("GET", "/orders", tok.AccessToken, nil)
	fmt.Print("IdP down: ", resp.StatusCode, " ", body)
	// Output:
	// exchange: 200 orders:read
	// IdP up: 401
	// IdP down: 200 offline-token orders:read
}
