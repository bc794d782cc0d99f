package authtest_test

import (
	"fmt"
	"io"
	"net/http"

	"github.com/golang-jwt/jwt/v5"

	"github.com/holdfast-go/holdfast/authfallback/authtest"
)

func Example() {
	idp := authtest.New()
	defer idp.Close()

	tok := idp.Issue(jwt.MapClaims{"sub": "alice", "scope": "orders:read"})
	parsed, _, _ := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
	fmt.Println(parsed.Method.Alg(), parsed.Claims.(jwt.MapClaims)["sub"])

	// Simulate an IdP outage: the JWKS endpoint answers 503.
	idp.SetFail5xx(true)
	resp, err := http.Get(idp.JWKSURL())
	if err != nil {
		panic(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, idp.JWKSHits())
	// Output:
	// RS256 alice
	// 503 1
}
