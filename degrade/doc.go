// Package degrade provides deliberate degradation for an HTTP service whose
// dependencies fail: outage detection, the service's mode with manual
// overrides, gating of requests by risk tier, stale-if-error caching,
// a status handler and synthetic probes.
//
// # Modes and signals
//
// A [Controller] ([New]) holds the service's [Mode]: [Normal], [Degraded]
// or [ReadOnly]. The mode follows signals about dependencies (the IdP, a
// payment API, a database):
//
//   - [Controller.Report] feeds one call's outcome into the dependency's
//     sliding window (a ring of buckets); the dependency is down while at
//     least 20 % of at least 10 reports in the last 60 s failed.
//   - [Controller.SetDown] marks a dependency down or up from a hook: a
//     circuit breaker's OnStateChange, authfallback's OnFallbackEnter and
//     OnFallbackExit.
//   - [Config.Dependencies] says which mode each dependency causes while
//     down; the worst mode wins.
//   - [Controller.Force] and [Controller.Release] override all of it by hand,
//     and [Controller.ForceDependency] forces one dependency down (a kill
//     switch: "disable payments") or up (also over HTTP with
//     [Controller.AdminHandler], which must sit behind the service's own
//     admin authentication). Every override is audited ([Config.AuditLog]).
//   - With [Config.Overrides], an [OverrideStore] (memory here, Redis and
//     PostgreSQL in the redisstore and pgstore modules), the overrides are
//     shared: an operator who flips a switch on one replica behind a load
//     balancer flips it on all of them within [Config.OverridePoll] (500 ms).
//
// [Config.OnModeChange] announces changes, and the time spent in each mode
// is kept for [Controller.Status].
//
// # Gating by risk tier
//
// [Controller.Handler] is middleware that lets every request through in
// Normal mode at the cost of one atomic load. Outside Normal mode it
// classifies the request with [Config.Tier] ([Read], [Write] or
// [Critical]): reads pass; writes go to [Config.Queue] (e.g. a handler
// that stores them and answers 202) or, without one, pass in Degraded mode
// and are refused in ReadOnly mode; critical writes are refused. A refusal
// is 503 with Retry-After and an RFC 9457 problem document naming the mode
// and the reason. Every response outside Normal mode carries the mode among
// its Holdfast-Degraded reasons (a comma-separated list: every fallback that
// applied adds its reason, none replaces another's).
//
// # Shedding under load
//
// With [Config.MaxConcurrent] the gate also bounds the requests in flight
// and, when the service is saturated, sheds by tier: Read first (above 3/4
// of the bound), then Write (above 9/10), Critical last; a Critical request
// may wait [Config.ShedWait] (5 ms) for a slot, ahead of every other tier.
// A shed Read is answered from [Config.Stale] when it holds a response for
// it, marked "overloaded, stale-if-error"; every other shed request gets 503
// with Retry-After: 1 at once. With [Config.StaleInside] a shed Read goes
// on, without a slot, through authentication to [Stale.Handler], which
// answers it from the response stored for that caller's own access (or with
// the 503) without calling the handler. examples/loadshed measures it with
// vegeta at twice the capacity. [Config.OnGate] reports every decision; unset, it
// costs nothing.
//
// # Stale-if-error
//
// [Stale] keeps the last good response of cacheable GET requests, as
// server middleware ([Stale.Handler]) and as a client RoundTripper
// ([Stale.Transport]), and serves it when the handler or upstream fails,
// marked with Age, Cache-Status (RFC 9211) and "stale-if-error" added to
// Holdfast-Degraded. It replaces 5xx statuses and 429 ([Stale.IsFailure]).
// It follows RFC 9111 and RFC 5861, and never serves one caller's response
// to another, nor one produced for wider access: a request with a verified
// caller (set by authfallback) is served only what was stored for the same
// issuer, subject, granted scopes and degraded-or-not, so a down-scoped or
// degraded token of the same subject never gets an admin's response, and
// serving it never bypasses the handler's own authorization. [Stale.Lookup]
// is the hook for a circuit breaker's Cached fallback.
//
// Where Stale sits matters, because a stale response looks like a success
// to everything outside it:
//
//   - Server: outside the circuit breaker's Handler and inside
//     authentication: gate(authn(stale.Handler(breaker.Handler(api)))).
//     The breaker then sees the real failures and opens, and its
//     open-circuit 503 is replaced by the stored response; a request is
//     authenticated before anything stored is served to it.
//   - Client: outside the retry and circuit breaker transports:
//     stale.Transport(retry(breaker(http.DefaultTransport))). Retry and
//     breaker see the real failures (inside them, Stale would hide every
//     failure it can answer, so the breaker would never open and retry
//     never retry), and Stale answers once retries are spent or the
//     breaker is open.
//
// A response that an inner fallback marked with Holdfast-Degraded (a
// breaker's Cached or Fallback answer) is passed on but never stored as
// the last good one, so Stale outside a breaker and the breaker's Cached
// hook connected to [Stale.Lookup] can be used together.
//
// # Status and probes
//
// [Controller.StatusHandler] serves the mode, reasons, dependencies, time
// in modes and registered components ([Controller.Register]) as JSON, for
// humans and load balancers. A [Probe] checks URLs on an interval with
// jitter and reports into the controller.
//
//	c := degrade.New(degrade.Config{
//		Dependencies: map[string]degrade.Mode{"idp": degrade.ReadOnly, "payments": degrade.Degraded},
//		Tier: func(r *http.Request) degrade.Tier {
//			if strings.HasPrefix(r.URL.Path, "/payments") && r.Method != http.MethodGet {
//				return degrade.Critical
//			}
//			return degrade.DefaultTier(r)
//		},
//	})
//	defer c.Close()
//	stale := &degrade.Stale{}
//	mux := http.NewServeMux()
//	mux.Handle("/healthz", c.StatusHandler())
//	mux.Handle("/", c.Handler(verifier.Handler(stale.Handler(b.Handler(api)))))
//	http.ListenAndServe(":8080", mux)
//
//	client := &http.Client{Transport: stale.Transport(&retry.Transport{Base: b.Transport(nil)})}
//
// Other packages feed the controller through hooks the service author
// connects (this package imports none of them):
//
//	authfallback.Config{
//		OnFallbackEnter: func(ev authfallback.FallbackEvent) { c.SetDown("idp", true, ev.Reason) },
//		OnFallbackExit:  func(authfallback.FallbackEvent) { c.SetDown("idp", false, "") },
//	}
//	breaker.Config{
//		OnStateChange: func(ch breaker.StateChange) {
//			if ch.To != breaker.HalfOpen { // up again once the trial calls closed it
//				c.SetDownOrdered(ch.Key, ch.To == breaker.Open, "circuit open", ch.Seq)
//			}
//		},
//		Cached:        stale.Lookup, // an open breaker serves the last good response
//	}
//	c.Register("breakers", func() any { return b.Snapshot() })
//
// Every exported type is safe for concurrent use unless its doc says
// otherwise. Hooks are called outside locks and may be called concurrently.
package degrade
