// Command resilient-api is a small HTTP service wired with every holdfast
// package, in the order the design gives (see examples/internal/stack):
//
//	degrade gate -> authfallback -> idempotency -> degrade.Stale -> breaker -> handler
//
// and calling its downstream through idempotency.Transport -> degrade.Stale ->
// retry -> breaker. It serves GET /items/{id} and POST /orders (with an
// Idempotency-Key) and POST /auth/offline-token (with -offline-key; the
// public keys at /holdfast/offline-jwks for replicas started with
// -offline-jwks, which verify those tokens without the key), its status at
// /holdfast/status, and the manual mode
// override (degrade's admin handler) on a separate, loopback-only listener.
//
// Run without flags it is a self-contained demo: it starts a fake identity
// provider and a fake downstream on loopback and prints a token to call it
// with. Point it at real ones with flags or environment variables:
//
//	resilient-api -issuer https://idp.example.com/ -audience my-api \
//	    -jwks https://idp.example.com/.well-known/jwks.json \
//	    -cache-file /var/lib/resilient-api/jwks.json \
//	    -downstream https://ledger.internal \
//	    -store redis -redis-addr 127.0.0.1:6379
//
// With -store redis or postgres the replicas share, beside the idempotency
// records and queued writes, the verifiers' outage state and the operator's
// overrides.
//
// Every flag has an environment variable: RESILIENT_API_ and the flag name
// in upper case with '-' as '_' (RESILIENT_API_REDIS_ADDR).
//
// It is its own Go module so that the Redis and PostgreSQL stores (modules
// of their own, with their drivers) stay out of holdfast's root module.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/holdfast-go/holdfast/authfallback/authtest"
	"github.com/holdfast-go/holdfast/examples/internal/downstream"
	"github.com/holdfast-go/holdfast/examples/internal/stack"
	"github.com/holdfast-go/holdfast/fault"
)

type config struct {
	addr, adminAddr                    string
	issuer, audience, jwks, cacheFile  string
	downstream, revocationURL          string
	offlineKey, offlineJWKS            string
	store, redisAddr, pgDSN, keyPrefix string
	keyRefresh, callTimeout            time.Duration
	maxOffline                         time.Duration
	breakerDelay                       time.Duration
	readTimeout, idleTimeout           time.Duration
	bare                               bool
	faults                             bool
}

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, logger, os.Args[1:]); err != nil {
		logger.Error("resilient-api", "err", err)
		os.Exit(1)
	}
}

func parse(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("resilient-api", flag.ContinueOnError)
	str := func(p *string, name, def, usage string) { fs.StringVar(p, name, env(name, def), usage) }
	dur := func(p *time.Duration, name string, def time.Duration, usage string) {
		if v := os.Getenv(envName(name)); v != "" {
			if d, err := time.ParseDuration(v); err == nil {
				def = d
			}
		}
		fs.DurationVar(p, name, def, usage)
	}
	str(&c.addr, "addr", "127.0.0.1:8080", "address to serve the API on")
	str(&c.adminAddr, "admin-addr", "127.0.0.1:9090", "address of the admin listener (mode override); keep it private; empty: none")
	str(&c.issuer, "issuer", "", `the IdP's issuer ("iss"); empty: start a fake IdP on loopback (demo)`)
	str(&c.audience, "audience", "", `accepted audience ("aud")`)
	str(&c.jwks, "jwks", "", "JWKS URLs, comma-separated: the primary first, then alternates")
	str(&c.cacheFile, "cache-file", "", "where the last-known-good key set is kept (default: a file in the user cache directory)")
	str(&c.revocationURL, "revocation-url", "", "the IdP's revocation list (JSON, see authfallback.RevocationList); empty: none")
	str(&c.offlineKey, "offline-key", "", "Ed25519 key file (PKCS #8 PEM, created if missing) that signs offline tokens minted at "+stack.OfflineTokenPath+"; empty: no offline tokens")
	str(&c.offlineJWKS, "offline-jwks", "", "verify-only offline tokens: trust those minted by the replica that publishes its keys at this URL (its /holdfast/offline-jwks), with no signing key here; not with -offline-key")
	str(&c.downstream, "downstream", "", "the downstream's base URL; empty: start a fake downstream on loopback (demo)")
	str(&c.store, "store", "memory", "shared state: memory (one instance), redis or postgres (idempotency records and queued writes, the verifiers' outage state, the operator's overrides, shared by every replica)")
	str(&c.redisAddr, "redis-addr", "127.0.0.1:6379", "Redis address for -store redis; several, comma-separated: a Redis Cluster's nodes")
	str(&c.pgDSN, "pg-dsn", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "PostgreSQL DSN for -store postgres")
	str(&c.keyPrefix, "store-prefix", "resilient-api", "key prefix (Redis) or table name (PostgreSQL) of the store")
	dur(&c.keyRefresh, "key-refresh", 5*time.Minute, "JWKS refresh interval")
	dur(&c.maxOffline, "max-offline", 30*time.Minute, "how long the IdP may be unreachable before degraded verifications fail closed (503)")
	dur(&c.callTimeout, "call-timeout", 2*time.Second, "timeout of one downstream call")
	dur(&c.breakerDelay, "breaker-delay", 0, "how long an open breaker waits before a trial call (0: 30 s for the routes, 3 s for the downstream, whose trials find its recovery)")
	dur(&c.readTimeout, "read-timeout", 30*time.Second, "how long a client may take to send a whole request, body included")
	dur(&c.idleTimeout, "idle-timeout", 2*time.Minute, "how long an idle keep-alive connection is kept open")
	fs.BoolVar(&c.faults, "faults", false, "fault injection for staging drills: the downstream client goes through a fault.Injector, set over the admin listener at /faults (inert until a fault is set)")
	fs.BoolVar(&c.bare, "bare", false, "serve the App alone, without holdfast and with a plain client to the downstream: the baseline of a load test (no authentication!)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.issuer != "" && (c.audience == "" || c.jwks == "") {
		return c, errors.New("-issuer needs -audience and -jwks")
	}
	if c.offlineKey != "" && c.offlineJWKS != "" {
		return c, errors.New("-offline-key and -offline-jwks exclude each other")
	}
	return c, nil
}

func envName(flagName string) string {
	return "RESILIENT_API_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func env(flagName, def string) string {
	if v, ok := os.LookupEnv(envName(flagName)); ok {
		return v
	}
	return def
}

// run serves until ctx ends (main: SIGINT or SIGTERM).
func run(ctx context.Context, logger *slog.Logger, args []string) error {
	c, err := parse(args)
	if err != nil {
		return err
	}

	cfg := stack.Config{
		KeyRefresh:         c.keyRefresh,
		MaxOfflineDuration: c.maxOffline,
		CallTimeout:        c.callTimeout,
		BreakerDelay:       c.breakerDelay,
		AuditLog:           logger,
		Logger:             logger,
		Issuer:             c.issuer,
		Audience:           []string{c.audience},
		JWKSURLs:           splitList(c.jwks),
		CacheFile:          c.cacheFile,
		Downstream:         c.downstream,

		RevocationURL: c.revocationURL,
	}
	if c.issuer == "" {
		idp := authtest.New()
		defer idp.Close()
		cfg.Issuer, cfg.Audience, cfg.JWKSURLs = idp.Issuer(), []string{idp.Audience()}, []string{idp.JWKSURL()}
		tok := idp.Issue(jwt.MapClaims{"sub": "demo-user", "scope": "read write"})
		defer fmt.Fprintf(os.Stderr, "\n")
		logger.Info("demo: fake IdP started", "issuer", idp.Issuer())
		if c.offlineKey == "" && c.offlineJWKS == "" { // the demo mints offline tokens with a key of its own
			_, key, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				return err
			}
			cfg.OfflineKey = key
		}
		fmt.Fprintf(os.Stderr, "\ndemo token (1 h):\n  export TOKEN=%s\n  curl -s -H \"Authorization: Bearer $TOKEN\" http://%s/items/1\n  curl -s -H \"Authorization: Bearer $TOKEN\" -H 'Idempotency-Key: \"k1\"' -d '{\"write_id\":\"w1\",\"amount\":5}' http://%s/orders\n  curl -s -H \"Authorization: Bearer $TOKEN\" -X POST http://%s%s\n\n", tok, c.addr, c.addr, c.addr, stack.OfflineTokenPath)
	}
	if c.downstream == "" {
		ds := httptest.NewServer(downstream.New())
		defer ds.Close()
		cfg.Downstream = ds.URL
		logger.Info("demo: fake downstream started", "url", ds.URL)
	}
	if cfg.CacheFile == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			dir = os.TempDir()
		}
		dir = filepath.Join(dir, "holdfast-resilient-api")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		cfg.CacheFile = filepath.Join(dir, "jwks.json")
	}
	if c.offlineKey != "" {
		key, err := loadOrCreateKey(c.offlineKey)
		if err != nil {
			return err
		}
		cfg.OfflineKey = key
	}
	cfg.OfflineJWKSURL = c.offlineJWKS
	if cfg.RevocationURL != "" {
		cfg.RevocationCacheFile = filepath.Join(filepath.Dir(cfg.CacheFile), "revocations.json")
	}
	if c.bare {
		return serveBare(ctx, logger, c, cfg.Downstream)
	}
	store, closeStore, err := openStore(ctx, c)
	if err != nil {
		return err
	}
	defer closeStore()
	cfg.Store = store
	overrides, closeOverrides, err := openOverrides(ctx, c)
	if err != nil {
		return err
	}
	defer closeOverrides()
	cfg.Overrides = overrides
	authState, closeAuthState, err := openAuthState(ctx, c)
	if err != nil {
		return err
	}
	defer closeAuthState()
	cfg.AuthState = authState

	var faults *fault.Injector
	if c.faults {
		faults = fault.New(fault.Config{Logger: logger})
		cfg.Base = faults.Transport(stack.DepDownstream, stack.NewBaseTransport())
	}

	svc, err := stack.New(cfg)
	if err != nil {
		return err
	}
	defer svc.Close()

	api, adminHandler := handlers(svc)
	if faults != nil {
		mux := http.NewServeMux()
		mux.Handle("/faults", faults.AdminHandler())
		mux.Handle("/", adminHandler)
		adminHandler = mux
	}
	srv := newServer(c, c.addr, api)
	errc := make(chan error, 2)
	go func() { errc <- srv.ListenAndServe() }()
	var admin *http.Server
	if c.adminAddr != "" {
		admin = newServer(c, c.adminAddr, adminHandler)
		go func() { errc <- admin.ListenAndServe() }()
	}
	logger.Info("resilient-api listening", "addr", c.addr, "admin", c.adminAddr, "store", c.store)

	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if admin != nil {
		_ = admin.Shutdown(sctx)
	}
	return srv.Shutdown(sctx)
}

// handlers returns what the API listener serves (the service and its
// status at /holdfast/status) and what the admin listener serves (degrade's
// admin handler: the operators' overrides, see docs/runbook.md).
func handlers(svc *stack.Service) (api, admin http.Handler) {
	mux := http.NewServeMux()
	mux.Handle("/holdfast/status", svc.Controller.StatusHandler())
	if h := svc.OfflineJWKS(); h != nil {
		// Public keys only: what -offline-jwks replicas fetch.
		mux.Handle(OfflineJWKSPath, h)
	}
	mux.Handle("/", svc)
	return mux, svc.Controller.AdminHandler()
}

// serveBare serves the App with a plain client and nothing of holdfast,
// the baseline a load test compares the service with:
//
//	resilient-api -bare -addr 127.0.0.1:8081 &
//	wrk -t2 -c32 -d10s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8081/items/1
func serveBare(ctx context.Context, logger *slog.Logger, c config, downstream string) error {
	app := &stack.App{
		Client: &http.Client{Transport: stack.NewBaseTransport()}, // the service's own base

		Downstream: downstream,
	}
	srv := newServer(c, c.addr, app)
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	logger.Warn("resilient-api: serving the bare App, without holdfast (no authentication)", "addr", c.addr)
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// OfflineJWKSPath is where a replica that mints offline tokens publishes
// their public keys.
const OfflineJWKSPath = "/holdfast/offline-jwks"

// maxHeaderBytes bounds a request's header (net/http's default is 1 MiB).
const maxHeaderBytes = 64 << 10

// newServer returns the server for addr with timeouts that a slow or idle
// client cannot outlast: a client that sends its header or body slowly (or
// not at all) is cut off after ReadHeaderTimeout and ReadTimeout, an idle
// keep-alive connection after IdleTimeout, and a header over 64 KiB is
// answered 431. Without them, 500 connections that stall their bodies
// hold 500 goroutines for as long as they like.
func newServer(c config, addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: min(5*time.Second, c.readTimeout),
		ReadTimeout:       c.readTimeout,
		IdleTimeout:       c.idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
