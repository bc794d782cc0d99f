package authfallback_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/golang-jwt/jwt/v5"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
)

func ExampleVerifier_Handler() {
	idp := authtest.New() // a fake IdP; use your IdP's URLs in production
	defer idp.Close()

	v, err := authfallback.New(authfallback.Config{
		Issuer:   idp.Issuer(),
		Audience: []string{idp.Audience()},
		JWKSURLs: []string{idp.JWKSURL()},
	})
	if err != nil {
		panic(err)
	}
	defer v.Close()

	api := v.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res, _ := authfallback.FromContext(r.Context())
		fmt.Fprintf(w, "hello %s (degraded=%v)", res.Subject, res.Degraded)
	}))
	srv := httptest.NewServer(api)
	defer srv.Close()

	call := func(token string) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			body, _ := io.ReadAll(resp.Body)
			fmt.Println(resp.StatusCode, string(body))
			return
		}
		fmt.Println(resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	call(idp.Issue(jwt.MapClaims{"sub": "alice"}))
	call("not-a-token")
	call("")
	// Output:
	// 200 hello alice (degraded=false)
	// 401 Bearer error="invalid_token"
	// 401 Bearer
}

// Fallback mode: the IdP goes down, tokens still verify with the
// last-known-good keys and are marked degraded; the hooks report it.
func ExampleConfig_fallback() {
	idp := authtest.NewWithConfig(authtest.Config{Algorithm: "EdDSA"})
	defer idp.Close()
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)

	v, err := authfallback.New(authfallback.Config{
		Issuer:    idp.Issuer(),
		Audience:  []string{idp.Audience()},
		JWKSURLs:  []string{idp.JWKSURL()},
		CacheFile: filepath.Join(dir, "jwks.json"),
		AuditLog:  slog.New(slog.DiscardHandler), // keep the example's output clean
		OnFallbackEnter: func(ev authfallback.FallbackEvent) {
			fmt.Println("fallback mode:", ev.Reason)
		},
		OnFallbackExit: func(ev authfallback.FallbackEvent) {
			fmt.Println("fallback mode over")
		},
	})
	if err != nil {
		panic(err)
	}
	defer v.Close()
	tok := idp.Issue(nil)

	idp.SetDown(true)
	_ = v.Refresh(context.Background()) // the background refresh would do the same
	res, err := v.Verify(context.Background(), tok)
	fmt.Println(err, res.Degraded, res.Reason)
	fmt.Println(v.Status().Fallback)

	idp.SetDown(false)
	_ = v.Refresh(context.Background())
	res, err = v.Verify(context.Background(), tok)
	fmt.Println(err, res.Degraded)
	// Output:
	// fallback mode: jwks-unreachable
	// <nil> true jwks-unreachable
	// true
	// fallback mode over
	// <nil> false
}
