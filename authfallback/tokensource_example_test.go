package authfallback_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/holdfast-go/holdfast/authfallback"
)

// A client whose token survives an outage of the token endpoint.
func ExampleTokenSource() {
	tokenEndpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"t0ken","token_type":"Bearer","expires_in":3600}`)
	}))
	defer tokenEndpoint.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "api saw:", r.Header.Get("Authorization"))
	}))
	defer api.Close()

	cc := &clientcredentials.Config{ClientID: "svc", ClientSecret: "secret", TokenURL: tokenEndpoint.URL}
	ts := authfallback.NewTokenSource(authfallback.TokenSourceConfig{
		// A new token on every call: TokenSource decides when to refresh.
		Base: authfallback.TokenSourceFunc(func() (*oauth2.Token, error) {
			return cc.Token(context.Background())
		}),
		OnRefreshError: func(e authfallback.TokenRefreshErrorEvent) {
			fmt.Println("token endpoint failing, current token valid until", e.ValidUntil)
		},
	})
	defer ts.Close()

	client := &http.Client{Transport: ts.Transport(http.DefaultTransport)}
	resp, err := client.Get(api.URL)
	if errors.Is(err, authfallback.ErrTokenUnavailable) {
		fmt.Println("no valid token")
		return
	}
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	io.Copy(os.Stdout, resp.Body)
	fmt.Println("refreshes:", ts.Status().Refreshes)
	// Output:
	// api saw: Bearer t0ken
	// refreshes: 1
}
