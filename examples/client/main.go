// Command client is a resilient HTTP client built from holdfast's client
// side: an authfallback.TokenSource that keeps a valid access token through
// an outage of the token endpoint (it refreshes early, in the background, and
// never hands out an expired token), over the client stack of
// examples/internal/stack (idempotency.Transport, degrade.Stale,
// retry.Transport, breaker.Transport).
//
// Run without flags it is a self-contained demo: it starts a fake IdP and the
// example service (examples/resilient-api's stack) on loopback, calls it,
// takes the IdP's token endpoint down and shows the calls still succeed.
// Against a real service:
//
//	client -api https://api.example.com -token-url https://idp.example.com/oauth/token \
//	    -client-id my-client -client-secret "$SECRET" -scopes "read write"
//
// Every flag has an environment variable: HOLDFAST_CLIENT_ and the flag name
// in upper case with '-' as '_' (HOLDFAST_CLIENT_CLIENT_SECRET).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
	"github.com/holdfast-go/holdfast/examples/internal/downstream"
	"github.com/holdfast-go/holdfast/examples/internal/stack"
	"github.com/holdfast-go/holdfast/idempotency"
)

type config struct {
	api, tokenURL, clientID, clientSecret, scopes string
	requests                                      int
}

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := run(logger, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(1)
	}
}

func env(name, def string) string {
	if v, ok := os.LookupEnv("HOLDFAST_CLIENT_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))); ok {
		return v
	}
	return def
}

func parse(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.StringVar(&c.api, "api", env("api", ""), "base URL of the service; empty: start the demo service on loopback")
	fs.StringVar(&c.tokenURL, "token-url", env("token-url", ""), "OAuth 2.0 token endpoint (client_credentials)")
	fs.StringVar(&c.clientID, "client-id", env("client-id", ""), "OAuth 2.0 client id")
	fs.StringVar(&c.clientSecret, "client-secret", env("client-secret", ""), "OAuth 2.0 client secret (prefer the environment variable)")
	fs.StringVar(&c.scopes, "scopes", env("scopes", "read write"), "space-separated scopes to ask for")
	fs.IntVar(&c.requests, "n", 4, "requests per round")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.api != "" && (c.tokenURL == "" || c.clientID == "") {
		return c, errors.New("-api needs -token-url and -client-id")
	}
	return c, nil
}

func run(logger *slog.Logger, args []string, out io.Writer) error {
	c, err := parse(args)
	if err != nil {
		return err
	}
	ctx := context.Background()
	var idp *authtest.Server
	var svc *stack.Service
	tokenClient := http.DefaultClient
	if c.api == "" {
		// The demo: a fake IdP, a fake downstream, and the example service.
		idp = authtest.New()
		defer idp.Close()
		ds := httptest.NewServer(downstream.New())
		defer ds.Close()
		dir, err := os.MkdirTemp("", "holdfast-client-demo")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		svc, err = stack.New(stack.Config{
			Issuer: idp.Issuer(), Audience: []string{idp.Audience()}, JWKSURLs: []string{idp.JWKSURL()},
			CacheFile: filepath.Join(dir, "jwks.json"), Downstream: ds.URL, AuditLog: logger, Logger: logger,
		})
		if err != nil {
			return err
		}
		defer svc.Close()
		api := httptest.NewServer(svc)
		defer api.Close()
		c.api, c.tokenURL, c.clientID, c.clientSecret = api.URL, idp.TokenURL(), idp.ClientID(), idp.ClientSecret()
		tokenClient = idp.Client()
	}

	// Tokens: fetched with client credentials, refreshed early in the
	// background, kept through an outage of the token endpoint.
	cc := &clientcredentials.Config{
		ClientID: c.clientID, ClientSecret: c.clientSecret, TokenURL: c.tokenURL,
		Scopes: strings.Fields(c.scopes),
	}
	tctx := context.WithValue(ctx, oauth2.HTTPClient, tokenClient)
	ts := authfallback.NewTokenSource(authfallback.TokenSourceConfig{
		Base:   authfallback.TokenSourceFunc(func() (*oauth2.Token, error) { return cc.Token(tctx) }),
		Logger: logger,
	})
	defer ts.Close()

	// Calls: the Bearer header outermost, then holdfast's client stack.
	client, _ := stack.NewClient(stack.ClientConfig{Logger: logger})
	client.Transport = ts.Transport(client.Transport)
	client.Timeout = 15 * time.Second

	round := func(label string) {
		fmt.Fprintf(out, "-- %s\n", label)
		for i := range c.requests {
			if i%2 == 0 {
				show(out, client, http.MethodGet, fmt.Sprintf("%s/items/%d", c.api, i), "")
				continue
			}
			body := fmt.Sprintf(`{"write_id":%q,"amount":%d}`, idempotency.NewKey(), 10+i)
			show(out, client, http.MethodPost, c.api+"/orders", body)
		}
		st := ts.Status()
		fmt.Fprintf(out, "   token source: valid=%v until %s, refreshes %d, failures %d\n",
			st.Valid, st.ValidUntil.Format(time.TimeOnly), st.Refreshes, st.Failures)
	}
	round("token endpoint up")
	if idp != nil {
		idp.SetDown(true)
		// The service would notice at its next refresh; make it now.
		_ = svc.Verifier.Refresh(ctx)
		round("IdP down (token and JWKS endpoints): the current token is still handed out, the service verifies it locally")
		idp.SetDown(false)
	}
	return nil
}

func show(out io.Writer, client *http.Client, method, url, body string) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		fmt.Fprintf(out, "   %s %s: %v\n", method, url, err)
		return
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(out, "   %s %s: %v\n", method, url, err)
		return
	}
	defer resp.Body.Close()
	var v map[string]any
	_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&v)
	mark := ""
	if d := resp.Header.Get("Holdfast-Degraded"); d != "" {
		mark = " [degraded: " + d + "]"
	}
	fmt.Fprintf(out, "   %s %s -> %s%s\n", method, req.URL.Path, resp.Status, mark)
}
