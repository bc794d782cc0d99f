// Package holdfastotel instruments every holdfast package with
// OpenTelemetry: metrics and spans from the packages' outcome hooks, and
// server and client spans from a Handler and a Transport wrapper that carry
// the request's trace context. It is a module of its own, so holdfast's root
// module imports no telemetry framework.
//
// One value serves a whole service:
//
//	inst, err := holdfastotel.New(holdfastotel.Config{MeterProvider: mp, TracerProvider: tp})
//	...
//	err = inst.Instrument(&authCfg, &degradeCfg, &idemCfg, &breakerCfg, stale, retryTransport, &replayerCfg)
//	handler := inst.Handler(ctrl.Handler(verifier.Handler(...)))
//	client := &http.Client{Transport: inst.Transport(...)}
//
// Instrument chains its hooks after the ones already set, so it may be
// called before or after the service's own wiring; each hook method
// (OnVerify, OnCall, ...) can also be assigned by hand.
//
// # Metrics
//
// Names follow the OpenTelemetry semantic conventions where one exists
// (http.server.request.duration, http.client.request.duration, in seconds,
// with http.request.method, http.route, http.response.status_code,
// server.address, error.type); holdfast's own are under holdfast.*:
//
//	holdfast.auth.verifications            {verification}  outcome (ok, degraded, refused, unavailable), reason, cached
//	holdfast.auth.verification.duration    s               outcome
//	holdfast.auth.fallback.transitions     {transition}    direction (enter, exit), reason
//	holdfast.auth.fallback.active          {verifier}      1 while a Verifier is in fallback mode
//	holdfast.auth.jwks.refresh_errors      {error}         failed JWKS (and revocation list) refreshes
//	holdfast.auth.token_refresh.duration   s               outcome (success, error): TokenSource refreshes
//	holdfast.auth.revocations              {revocation}
//	holdfast.auth.reconciled               {token}         finding
//	holdfast.auth.offline_issued           {token}
//	holdfast.retry.retries                 {retry}         http.response.status_code (0 after an error)
//	holdfast.retry.give_ups                {give_up}       reason (attempts, budget, deadline, not-replayable, other)
//	holdfast.breaker.calls                 {call}          side, outcome, state
//	holdfast.breaker.call.duration         s               side, outcome
//	holdfast.breaker.transitions           {transition}    key, from, to
//	holdfast.idempotency.outcomes          {request}       outcome, http.request.method
//	holdfast.degrade.gate.decisions        {request}       decision, tier, mode, stale
//	holdfast.degrade.mode_changes          {change}        to, forced
//	holdfast.degrade.mode                  {mode}              0 normal, 1 degraded, 2 read-only
//	holdfast.stale.served                  {response}      (the age is in holdfast.stale.age, s)
//
// The authentication success rate an SLO names is
// holdfast.auth.verifications{outcome=ok|degraded} over all of them.
//
// # Spans
//
// Handler starts a server span per request (its parent extracted from the
// request's headers); Transport a client span per call (its context injected
// into the outgoing headers). Below them, as children of the request's span:
// holdfast.auth.verify (its real start and duration, from
// VerifyEvent.Latency), holdfast.breaker (per call decided), holdfast.retry
// and holdfast.retry.give_up, holdfast.idempotency (per outcome),
// holdfast.idempotency.replay (a queued request run by the Replayer; the
// replayed or failed outcome that follows is a holdfast.idempotency span of
// its own), holdfast.auth.token_refresh, and the JWKS fetches of a
// Verifier as client spans named holdfast.auth.fetch. Gate decisions and
// stale answers are span events (holdfast.gate, holdfast.stale) on the
// request's span. No span or attribute carries a token, a key or a body.
//
// An Instrumentation is safe for concurrent use; its hooks never block.
package holdfastotel
