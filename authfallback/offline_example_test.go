package authfallback_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"time"

	"github.com/holdfast-go/holdfast/authfallback"
)

// Callers exchange a verified primary token for an offline token.
func ExampleOfflineIssuer() {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	offline, err := authfallback.NewOfflineIssuer(authfallback.OfflineConfig{
		Issuer:        "https://api.example.com/offline",
		Key:           key,
		TTL:           10 * time.Minute,
		AllowedScopes: []string{"orders:read"},
		AuditLog:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	// In a service: mux.Handle("POST /token/offline", verifier.Handler(offline.ExchangeHandler())).
	// Here a stand-in puts the verified primary token's Result in the context.
	verified := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			res := &authfallback.Result{Subject: "alice", Scopes: []string{"orders:read", "orders:write"}}
			next.ServeHTTP(w, r.WithContext(authfallback.NewContext(r.Context(), res)))
		})
	}
	srv := httptest.NewServer(verified(offline.ExchangeHandler()))
	defer srv.Close()

	resp, err := http.PostForm(srv.URL, url.Values{"scope": {"orders:read orders:write"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
		Scope       string `json:"scope"`
		ExpiresIn   int    `json:"expires_in"`
	}
	json.NewDecoder(resp.Body).Decode(&body)
	fmt.Println(resp.StatusCode, body.Scope, body.ExpiresIn > 590)

	res, err := offline.Verify(body.AccessToken, time.Now())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Subject, strings.Join(res.Scopes, ","), res.Degraded, res.Reason)
	// Output:
	// 200 orders:read true
	// alice orders:read true offline-token
}
