// Package stack wires every holdfast package into one service.
// examples/resilient-api serves it and examples/outagedrill drills it, so what
// the drill measures is what the example shows.
//
// Server side, outermost first (docs/design.md's order):
//
//	degrade gate        mode + tier: reads pass, writes are authenticated and queued (202) while the downstream is down
//	authfallback        bearer token verified against the last-known-good JWKS (memory + CacheFile)
//	idempotency         Idempotency-Key, scoped by the verified caller: replay, 409, 422, run once and store
//	degrade.Stale       a failing read is answered with its last good response, marked stale
//	breaker (route)     a failing route fails fast
//	App                 the service's own code
//
// The App calls the downstream through NewClient's stack, outermost first:
//
//	idempotency.Transport   a key on every write (the App derives it from the caller's key)
//	degrade.Stale           last good response of a read when its retries failed
//	retry.Transport         safe retries within a budget
//	breaker (host)          fail fast while the downstream is down
//	degrade.ReportTransport every attempt's outcome to the degrade controller
//	http.Transport
//
// Queued writes are kept with their verified caller (never their token) and
// run by idempotency's Replayer through the chain without the gate and
// without authentication, as that caller: at once when the mode returns to
// Normal, every ReplayEvery, and while degraded by half-open trials (one
// queued write every TrialEvery). A trial that succeeds, or the downstream
// breaker closing, tells the controller the downstream recovered
// (Controller.Recovered), so the mode returns to Normal without client
// traffic, under a write-only load too.
//
// As docs/design.md orders it, on both sides: degrade.Stale sits above the
// breaker (and retry), not below. Below it, a stale answer would look like a
// success to the breaker, which would then never open for reads; above it,
// the breaker counts the downstream's real failures and Stale answers reads
// through an open breaker (its error is breaker.ErrOpen).
//
// An order's downstream Idempotency-Key is derived from the caller's subject
// and key, so a client's retry, a replay of a queued write, and the retries
// below are all one write downstream.
package stack

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/breaker"
	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/retry"
)

// RevocationsEnforced says whether the Service's verifier enforces the
// revocation list (Config.RevocationURL).
const RevocationsEnforced = true

// OfflineTokenPath is where a caller exchanges its token for an offline
// token, when Config.OfflineKey is set.
const OfflineTokenPath = "/auth/offline-token"

// Dependency names reported to the degrade controller.
const (
	DepDownstream = "downstream"
	DepIdP        = "idp"
)

// Config configures a Service. Zero durations take the library defaults,
// which suit production; the outage drill shortens them to fit in a minute.
type Config struct {
	// Issuer, Audience, JWKSURLs and CacheFile configure authfallback.
	Issuer    string
	Audience  []string
	JWKSURLs  []string
	CacheFile string
	// KeyRefresh is authfallback's RefreshInterval. If zero, 5 min.
	KeyRefresh time.Duration
	// RevocationURL, if set, is the IdP's revocation list (see
	// authfallback.RevocationList), polled every KeyRefresh, kept in
	// RevocationCacheFile when that is set, and enforced on every request;
	// tokens accepted during an outage whose subject turns out revoked are
	// reported through Hooks.OnReconcile.
	RevocationURL       string
	RevocationCacheFile string
	// MaxOfflineDuration is how long fallback mode may last before
	// degraded verifications fail closed (503), authfallback's
	// Policy.MaxOfflineDuration. If zero, 30 min.
	MaxOfflineDuration time.Duration
	// Overrides shares the operators' overrides (a forced mode or
	// dependency) between replicas: degrade.Config.Overrides. If nil, an
	// override holds on the replica that got it. degrade.NewMemoryOverrides
	// in one process, redisstore.NewOverrides or pgstore.NewOverrides for a
	// fleet.
	Overrides degrade.OverrideStore
	// OverridePoll is how often Overrides is read: a switch flipped on one
	// replica reaches the others within it. If zero, 500 ms.
	OverridePoll time.Duration
	// AllowedScopes are the scopes a request authenticated in fallback mode
	// keeps (authfallback.Policy). If nil, read and write: the example's
	// writes can be queued and reconciled, so they stay allowed.
	AllowedScopes []string

	// OfflineKey, if set, signs offline tokens: a caller whose token
	// verifies (degraded or not) exchanges it at POST /auth/offline-token
	// for a short-lived token (OfflineTTL, 5 min if zero; never past the
	// exchanged token's own expiry) that this service accepts while it is
	// in fallback mode, verified with the fleet's own key: a credential
	// for when a replica cannot verify the IdP's token (a token expired
	// inside the outage is served by the grace window instead). Keep the
	// key across restarts (a file, a secret store), or tokens minted
	// before a restart stop verifying.
	OfflineKey ed25519.PrivateKey
	OfflineTTL time.Duration
	// OfflinePublicKeys or OfflineJWKSURL, if set instead of OfflineKey,
	// make this replica trust offline tokens without minting any
	// (verify-only: no private key on it, no exchange route): the keys,
	// by kid, of the replicas that mint them (their
	// OfflineIssuer.PublicKeys), or the URL where one publishes them
	// (Service.OfflineJWKS, served by resilient-api at
	// /holdfast/offline-jwks), fetched with last-known-good caching, so
	// a Rotate there reaches this replica. OfflineTTL must be the issuing
	// side's.
	OfflinePublicKeys map[string]crypto.PublicKey
	OfflineJWKSURL    string

	// Downstream is the downstream's base URL.
	Downstream string
	// CallTimeout bounds one downstream attempt (breaker timeout). If zero, 2 s.
	CallTimeout time.Duration
	// BreakerDelay is how long a breaker stays open before a trial call.
	// If zero, 30 s for the route breakers and ClientBreakerDelay's default
	// for the downstream's.
	BreakerDelay time.Duration
	// ClientBreakerDelay, if set, is the downstream breaker's delay instead
	// of BreakerDelay. If both are zero, 3 s: while the downstream is down,
	// its breaker lets one trial call through per delay (a queued write's
	// trial replay, or a read), so the service finds the downstream back
	// within about that long of its return, with or without client traffic.
	// A longer delay spares the downstream nothing that matters (one call
	// per delay) and delays the recovery by as much.
	ClientBreakerDelay time.Duration
	// DetectWindow is the degrade controller's window. If zero, 60 s.
	DetectWindow time.Duration
	// ReplayEvery is how often queued writes are replayed while the mode is
	// normal. If zero, 5 s.
	ReplayEvery time.Duration
	// TrialEvery is how often, while degraded, one queued write is replayed
	// as a trial of the downstream. If zero, 1 s.
	TrialEvery time.Duration
	// MaxReplayAttempts is how many failed replays fail a queued write for
	// good (its outcome becomes a 500 problem the client reads). If zero, 5.
	MaxReplayAttempts int
	// RetryBudget is shared by the downstream client's retries. If nil, one
	// with the defaults.
	RetryBudget *retry.Budget

	// Store keeps idempotency records and queued writes. If nil, a memory
	// store owned by the Service (closed by Close). Pass a Redis or
	// PostgreSQL store (the nested modules) to share it between replicas;
	// the outage drill passes one memory store to the service it restarts,
	// standing in for such a shared store. A 202 is as durable as the
	// store: with Redis, run it with appendonly yes.
	Store idempotency.Store

	// AuthState, if set, is the outage state the replicas' verifiers
	// share (authfallback.Config.State): the last-known-good key set, the
	// tokens seen valid (so the grace window holds on every replica, not
	// only on the one that saw the token) and the degraded acceptances to
	// reconcile. A replica started on an empty disk during an IdP outage
	// loads its keys from it. If nil, each replica keeps its own (memory
	// and CacheFile). authfallback.NewMemoryState in one process,
	// redisstore.NewAuthState or pgstore.NewAuthState for a fleet.
	AuthState authfallback.StateStore
	// StateFlushInterval is how often a replica writes what it learnt to
	// AuthState (authfallback.Config.StateFlushInterval). If zero, 1 s.
	StateFlushInterval time.Duration
	// SealKey, if set, is an AEAD key (AES-GCM: 16 or 32 bytes) that seals
	// the bearer token of a queued write, so its replay can forward it. If
	// nil, tokens are stripped: the replay runs as the recorded caller.
	SealKey []byte

	// Base sends the downstream attempts. If nil, NewBaseTransport().
	Base http.RoundTripper

	// AuditLog receives authfallback's audit events. If nil, slog.Default().
	AuditLog *slog.Logger
	// Logger receives the other packages' logs. If nil, nothing is logged.
	Logger *slog.Logger

	// Hooks are called after the Service's own wiring (e.g. to export
	// metrics, see examples/otel). Each may be nil.
	Hooks Hooks
}

// Hooks lets a caller observe every package of the stack. They are called
// concurrently and must not block.
type Hooks struct {
	OnFallbackEnter func(authfallback.FallbackEvent)
	OnFallbackExit  func(authfallback.FallbackEvent)
	OnRefreshError  func(authfallback.RefreshErrorEvent)
	OnRevocation    func(authfallback.RevocationEvent)
	OnReconcile     func(authfallback.ReconcileEvent)
	OnOfflineIssue  func(authfallback.OfflineIssueEvent)
	OnModeChange    func(degrade.ModeChange)
	OnStale         func(degrade.StaleEvent)
	OnRetry         func(retry.RetryEvent)
	OnGiveUp        func(retry.GiveUpEvent)
	OnIdempotency   func(kind string, ev idempotency.Event)
	OnBreaker       func(BreakerChange)
	// OnReplayed is called with n = 1 for each queued write that was
	// replayed and stored, and with n = 0 and an error for each that failed
	// for good.
	OnReplayed func(n int, err error)
	// OnReplay is called for each queued write replayed (ev.Trial for a
	// trial) and, with failed set, for each that failed for good.
	OnReplay func(ev idempotency.ReplayEvent, failed bool)
	// OnOutcome receives every idempotency decision.
	OnOutcome func(idempotency.OutcomeEvent)
	// OnVerify receives every verification's outcome, OnCall every
	// decision of both breakers, OnGate every decision of the gate.
	OnVerify func(authfallback.VerifyEvent)
	OnCall   func(breaker.CallEvent)
	OnGate   func(degrade.GateEvent)
	// OnStateChange receives the state changes of both breakers as
	// breaker reports them (OnBreaker gets them as BreakerChange).
	OnStateChange func(breaker.StateChange)
}

// BreakerChange is a state change of one of the Service's breakers.
type BreakerChange struct {
	// Side is "client" (the downstream host) or "server" (a route).
	Side     string
	Key      string
	From, To string
}

// Service is the wired service. It is an http.Handler.
type Service struct {
	Verifier    *authfallback.Verifier
	Controller  *degrade.Controller
	Idempotency *idempotency.Idempotency
	// Replayer runs the queued writes.
	Replayer *idempotency.Replayer
	// Revocations is the IdP's revocation list (nil without
	// Config.RevocationURL).
	Revocations *authfallback.RevocationList
	// Client is the downstream client the App uses.
	Client *http.Client
	// ClientBreaker guards the downstream host; ServerBreaker the routes.
	ClientBreaker, ServerBreaker *breaker.Breaker

	handler http.Handler
	replay  http.Handler // the chain without the gate and authentication: what the Replayer runs
	queue   http.Handler // authentication, then Enqueue: where the gate sends writes
	offline *authfallback.OfflineIssuer
	owned   *idempotency.MemoryStore
	cfg     Config

	// verifier is Verifier, for hooks that may run before New returns.
	verifier atomic.Pointer[authfallback.Verifier]
	// refreshing: a key refresh asked by idpAnswered runs.
	refreshing atomic.Bool
	ctx        context.Context // ends with Close
	cancel     context.CancelFunc

	closeOnce sync.Once
	closes    []func()
}

// New builds a Service. It fails only on an invalid configuration: an
// unreachable IdP or downstream is an outage to survive, not an error.
func New(cfg Config) (*Service, error) {
	s := &Service{cfg: cfg}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	h := cfg.Hooks
	store := cfg.Store
	if store == nil {
		s.owned = idempotency.NewMemoryStore(idempotency.MemoryConfig{})
		store = s.owned
	}

	var seal cipher.AEAD
	if cfg.SealKey != nil {
		block, err := aes.NewCipher(cfg.SealKey)
		if err != nil {
			return nil, fmt.Errorf("stack: SealKey: %w", err)
		}
		if seal, err = cipher.NewGCM(block); err != nil {
			return nil, fmt.Errorf("stack: SealKey: %w", err)
		}
	}

	// Idempotency first: the gate needs its Enqueue. Records are scoped by
	// the verified caller (the default), so a client that refreshed its
	// token gets its write replayed, not run again.
	s.Idempotency = idempotency.New(idempotency.Config{
		Store:           store,
		RetryAfter:      time.Second,
		MaxRequestBytes: MaxBody,
		Seal:            seal,
		OnOutcome:       h.OnOutcome,
		Logger:          cfg.Logger,
		OnReplay:        idemHook(h, "replay"),
		OnConflict:      idemHook(h, "conflict"),
		OnRelease:       idemHook(h, "release"),
		OnStoreError: func(ev idempotency.Event) {
			if h.OnIdempotency != nil {
				h.OnIdempotency("store-error", ev)
			}
		},
	})

	s.Controller = degrade.New(degrade.Config{
		Dependencies: map[string]degrade.Mode{
			DepDownstream: degrade.Degraded,
			// Local verification keeps the service whole while the IdP is
			// down: track it in the status, do not change the mode.
			DepIdP: degrade.Normal,
		},
		Window:       cfg.DetectWindow,
		MinReports:   5,
		Overrides:    cfg.Overrides,
		OverridePoll: cfg.OverridePoll,
		AuditLog:     cfg.AuditLog,
		// Minting an offline token changes nothing the queue could defer:
		// it passes in every mode, like a read.
		Tier: func(r *http.Request) degrade.Tier {
			if isSafe(r.Method) || r.URL.Path == OfflineTokenPath {
				return degrade.Read
			}
			return degrade.Write
		},
		// The gate is outermost, so a write it queues has not been
		// authenticated yet: authenticate it before it is stored (and its
		// body read), so no one without a valid token can fill the queue
		// during an outage; the write is stored with its verified caller,
		// and replayed as that caller, whatever became of its token.
		Queue:      http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.queue.ServeHTTP(w, r) }),
		RetryAfter: time.Second,
		Logger:     cfg.Logger,
		OnGate:     h.OnGate,
		OnModeChange: func(ch degrade.ModeChange) {
			if ch.To == degrade.Normal {
				s.Kick()
			}
			if h.OnModeChange != nil {
				h.OnModeChange(ch)
			}
		},
	})
	s.closes = append(s.closes, s.Controller.Close)

	var revocations *authfallback.RevocationList
	if cfg.RevocationURL != "" {
		rl, err := authfallback.NewRevocationList(authfallback.RevocationListConfig{
			URL:             cfg.RevocationURL,
			CacheFile:       cfg.RevocationCacheFile,
			RefreshInterval: cfg.KeyRefresh,
			FetchTimeout:    2 * time.Second,
			Logger:          cfg.Logger,
			OnRevocation: func(ev authfallback.RevocationEvent) {
				s.idpAnswered()
				if h.OnRevocation != nil {
					h.OnRevocation(ev)
				}
			},
		})
		if err != nil {
			s.Close()
			return nil, err
		}
		revocations = rl
		s.Revocations = rl
		s.closes = append(s.closes, func() { _ = rl.Close() })
	}
	allowed := cfg.AllowedScopes
	if allowed == nil {
		allowed = []string{"read", "write"}
	}
	acfg := authfallback.Config{
		Issuer:          cfg.Issuer,
		Audience:        cfg.Audience,
		JWKSURLs:        cfg.JWKSURLs,
		CacheFile:       cfg.CacheFile,
		RefreshInterval: cfg.KeyRefresh,
		FetchTimeout:    2 * time.Second,
		AuditLog:        cfg.AuditLog,
		OnFallbackEnter: func(ev authfallback.FallbackEvent) {
			s.Controller.SetDown(DepIdP, true, ev.Reason)
			if h.OnFallbackEnter != nil {
				h.OnFallbackEnter(ev)
			}
		},
		OnFallbackExit: func(ev authfallback.FallbackEvent) {
			s.Controller.SetDown(DepIdP, false, "")
			if h.OnFallbackExit != nil {
				h.OnFallbackExit(ev)
			}
		},
		OnRefreshError:     h.OnRefreshError,
		OnReconcile:        h.OnReconcile,
		OnVerify:           h.OnVerify,
		Policy:             authfallback.Policy{AllowedScopes: allowed, MaxOfflineDuration: cfg.MaxOfflineDuration},
		StateFlushInterval: cfg.StateFlushInterval,
	}
	if cfg.AuthState != nil {
		acfg.State = cfg.AuthState
	}
	if revocations != nil { // never a nil *RevocationList in the interface
		acfg.Revocations = revocations
	}
	if n := btoi(cfg.OfflineKey != nil) + btoi(cfg.OfflinePublicKeys != nil) + btoi(cfg.OfflineJWKSURL != ""); n > 1 {
		s.Close()
		return nil, errors.New("stack: OfflineKey, OfflinePublicKeys and OfflineJWKSURL exclude each other")
	}
	if cfg.OfflineKey != nil || cfg.OfflinePublicKeys != nil || cfg.OfflineJWKSURL != "" {
		iss, err := authfallback.NewOfflineIssuer(authfallback.OfflineConfig{
			Issuer:          OfflineIssuer(cfg.Issuer),
			Audience:        cfg.Audience,
			Key:             cfg.OfflineKey,
			PublicKeys:      cfg.OfflinePublicKeys,
			JWKSURL:         cfg.OfflineJWKSURL,
			RefreshInterval: cfg.KeyRefresh,
			TTL:             cfg.OfflineTTL,
			AllowedScopes:   allowed,
			AuditLog:        cfg.AuditLog,
			OnIssue:         h.OnOfflineIssue,
		})
		if err != nil {
			s.Close()
			return nil, err
		}
		s.closes = append(s.closes, func() { _ = iss.Close() })
		if cfg.OfflineKey != nil { // a verify-only issuer mints nothing: no exchange route
			s.offline = iss
		}
		acfg.Offline = iss
	}
	v, err := authfallback.New(acfg)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.Verifier = v
	s.verifier.Store(v)
	s.closes = append(s.closes, func() { _ = v.Close() })

	// The downstream client (see NewClient); below it, every attempt's
	// outcome is reported to the degrade controller.
	base := cfg.Base
	if base == nil {
		base = NewBaseTransport()
	}
	var clientBrk *breaker.Breaker
	clientHook := s.breakerHook("client", true)
	s.Client, clientBrk = NewClient(ClientConfig{
		Base:         &degrade.ReportTransport{Base: base, Controller: s.Controller, Dependency: DepDownstream},
		CallTimeout:  s.callTimeout(),
		BreakerDelay: s.clientBreakerDelay(),
		Budget:       cfg.RetryBudget,
		OnBreaker: func(ch breaker.StateChange) {
			clientHook(ch)
			if ch.To == breaker.Closed {
				// A half-open trial got through: the downstream answers.
				s.Controller.Recovered(DepDownstream)
			}
		},
		Hooks:  h,
		Logger: cfg.Logger,
	})
	// The route breaker; degrade.Stale sits outside it for the reason
	// NewClient gives.
	serverBrk := breaker.New(breaker.Config{
		Timeout:       2 * s.callTimeout(),
		Delay:         cfg.BreakerDelay,
		Key:           route,
		OnStateChange: s.breakerHook("server", false),
		OnCall:        h.OnCall,
		Logger:        cfg.Logger,
	})
	s.ClientBreaker, s.ServerBreaker = clientBrk, serverBrk

	app := &App{
		Client:        s.Client,
		Downstream:    cfg.Downstream,
		DownstreamKey: downstreamKey,
		Authorize:     hasScope,
		Error:         writeProblem,
	}
	// Server side, innermost first.
	serverStale := &degrade.Stale{MaxStale: time.Hour, OnStale: h.OnStale, Logger: cfg.Logger}
	var inner http.Handler = serverBrk.Handler(app)
	inner = serverStale.Handler(inner)
	inner = s.Idempotency.Handler(inner)
	if s.offline != nil {
		mux := http.NewServeMux()
		mux.Handle(OfflineTokenPath, s.offline.ExchangeHandler())
		mux.Handle("/", inner)
		inner = mux
	}
	s.replay = inner
	s.queue = v.Handler(http.HandlerFunc(s.Idempotency.Enqueue))
	s.handler = s.Controller.Handler(v.Handler(inner))

	// What the status handler shows beside the mode and dependencies.
	s.Controller.Register("auth", func() any {
		st := v.Status()
		return map[string]any{
			"fallback": st.Fallback, "reason": st.Reason, "key_age_s": int(st.KeyAge.Seconds()),
			"keys": st.KeyCount, "stale": st.Stale, "failures": st.Failures,
		}
	})
	s.Controller.Register("breakers", func() any {
		return map[string]any{"client": breakerStatus(clientBrk), "server": breakerStatus(serverBrk)}
	})

	s.Replayer = idempotency.NewReplayer(idempotency.ReplayerConfig{
		Idempotency:   s.Idempotency,
		Handler:       s.replay,
		Healthy:       func() bool { return s.Controller.Mode() == degrade.Normal },
		Interval:      s.replayEvery(),
		TrialInterval: cfg.TrialEvery,
		MaxAttempts:   cfg.MaxReplayAttempts,
		Logger:        cfg.Logger,
		// A queued write runs as the caller it was accepted for, without
		// its token; a revocation of that subject learnt since (the IdP
		// was down while it was queued) refuses it. The token's issue time
		// is not recorded, so any revocation of the subject counts.
		Authorize: func(_ *http.Request, c *idempotency.Caller) error {
			if revocations == nil || c == nil {
				return nil
			}
			if revoked, rule := revocations.Revoked(c.Subject, "", time.Time{}); revoked {
				return fmt.Errorf("stack: subject revoked (%s)", rule)
			}
			return nil
		},
		OnReplayed: func(ev idempotency.ReplayEvent) {
			if ev.Trial && ev.Status < 500 {
				// A queued write got through while degraded: the
				// downstream answers again.
				s.Controller.Recovered(DepDownstream)
			}
			if h.OnReplay != nil {
				h.OnReplay(ev, false)
			}
			if h.OnReplayed != nil {
				h.OnReplayed(1, nil)
			}
		},
		OnFailed: func(ev idempotency.ReplayEvent) {
			if h.OnReplay != nil {
				h.OnReplay(ev, true)
			}
			if h.OnReplayed != nil {
				h.OnReplayed(0, fmt.Errorf("stack: a queued %s %s failed after %d attempts", ev.Method, ev.URL, ev.Attempts))
			}
		},
	})
	return s, nil
}

// OfflineIssuer is the issuer of the offline tokens a Service with
// OfflineKey mints for the IdP issuer.
func OfflineIssuer(issuer string) string {
	return strings.TrimSuffix(issuer, "/") + "/holdfast-offline"
}

// MaxBody bounds the body of a keyed write (idempotency answers 413 above
// it), as the App bounds an order.
const MaxBody = MaxOrderBytes

func idemHook(h Hooks, kind string) func(idempotency.Event) {
	if h.OnIdempotency == nil {
		return nil
	}
	return func(ev idempotency.Event) { h.OnIdempotency(kind, ev) }
}

func (s *Service) callTimeout() time.Duration {
	if s.cfg.CallTimeout > 0 {
		return s.cfg.CallTimeout
	}
	return 2 * time.Second
}

func (s *Service) clientBreakerDelay() time.Duration {
	switch {
	case s.cfg.ClientBreakerDelay > 0:
		return s.cfg.ClientBreakerDelay
	case s.cfg.BreakerDelay > 0:
		return s.cfg.BreakerDelay
	}
	return 3 * time.Second
}

func (s *Service) replayEvery() time.Duration {
	if s.cfg.ReplayEvery > 0 {
		return s.cfg.ReplayEvery
	}
	return 5 * time.Second
}

// idpAnswered is called when the IdP's revocation list answered with a
// revocation this replica had not seen: the IdP is back, or partly. If the
// verifier is still in fallback mode (its key refresh waits out a backoff
// that grows to KeyRefresh), its keys are refreshed now: leaving fallback
// mode ends the grace windows and offline tokens that a subject revoked
// during the outage may still hold, and, with AuthState, tells the other
// replicas that the IdP answers, so they refresh too (and, reconciling,
// refresh their own revocation lists). One such refresh at a time.
func (s *Service) idpAnswered() {
	v := s.verifier.Load()
	if v == nil || !v.Status().Fallback || !s.refreshing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer s.refreshing.Store(false)
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		defer cancel()
		_ = v.Refresh(ctx)
	}()
}

// OfflineJWKS returns the handler that publishes the public keys of the
// offline tokens this Service mints (for replicas with OfflineJWKSURL), or
// nil when it mints none.
func (s *Service) OfflineJWKS() http.Handler {
	if s.offline == nil {
		return nil
	}
	return s.offline.JWKSHandler()
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ServeHTTP implements http.Handler.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Kick asks for a replay of the queued writes now.
func (s *Service) Kick() {
	if s.Replayer != nil {
		s.Replayer.Kick()
	}
}

// Replay runs the queued writes once (see idempotency.Replayer.Drain).
func (s *Service) Replay(ctx context.Context) (int, error) {
	return s.Replayer.Drain(ctx)
}

// Drain replays queued writes until none is left or ctx ends. It returns the
// number of writes replayed.
func (s *Service) Drain(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := s.Replay(ctx)
		total += n
		if err == nil && n == 0 {
			return total, nil
		}
		if ctx.Err() != nil {
			return total, context.Cause(ctx)
		}
		if err != nil && !errors.Is(err, idempotency.ErrReplayHalted) {
			return total, err
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return total, context.Cause(ctx)
		case <-t.C:
		}
	}
}

// Close stops the Service's goroutines. A store passed in Config is not
// closed. Close is idempotent.
func (s *Service) Close() { s.closeOnce.Do(s.close) }

func (s *Service) close() {
	s.cancel()
	if s.Replayer != nil {
		s.Replayer.Close()
	}
	for i := len(s.closes) - 1; i >= 0; i-- {
		s.closes[i]()
	}
	if s.owned != nil {
		_ = s.owned.Close()
	}
}

// downstreamKey derives the downstream Idempotency-Key of an order from the
// caller's subject and key, so every attempt, retry and replay of one order
// is one write downstream too. Orders without a key get a fresh one from
// idempotency.Transport.
func downstreamKey(r *http.Request) string {
	k := r.Header.Get(idempotency.HeaderKey)
	if k == "" {
		return ""
	}
	// The verified caller, live or recorded with a queued write (a
	// replay has no token, so authfallback's Result is not there: the
	// recorded caller is).
	// The caller the idempotency record is scoped by (an offline token's
	// is its primary issuer's subject), live or recorded with a replay.
	id := ""
	if c := idempotency.CallerFromContext(r.Context()); c != nil {
		id = c.Issuer + "\x00" + c.Subject
	}
	sum := sha256.Sum256([]byte(id + "\x00" + k))
	return hex.EncodeToString(sum[:16])
}

// hasScope authorizes with the verified caller's granted scopes (narrowed
// to AllowedScopes when it was accepted in fallback mode), live or recorded
// with a queued write.
func hasScope(r *http.Request, scope string) bool {
	res, ok := authfallback.FromContext(r.Context()) // a replay's recorded caller too
	return ok && res.HasScope(scope)
}

func writeProblem(w http.ResponseWriter, r *http.Request, status int, detail string) {
	typ, title := "internal", "Internal error"
	switch status {
	case http.StatusBadGateway:
		typ, title = "downstream-failed", "Downstream failed"
	case http.StatusBadRequest:
		typ, title = "bad-request", "Bad request"
	case http.StatusNotFound:
		typ, title = "not-found", "Not found"
	case http.StatusForbidden:
		typ, title = "insufficient-scope", "Insufficient scope"
	case http.StatusRequestEntityTooLarge:
		typ, title = "body-too-large", "Request body too large"
	}
	// RFC 9457 problem details, like every error holdfast itself writes.
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"type":     "https://example.com/problems/" + typ,
		"title":    title,
		"status":   status,
		"detail":   detail,
		"instance": r.URL.Path,
	})
}

// isSafe reports whether method is safe (RFC 9110 §9.2.1).
func isSafe(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}
