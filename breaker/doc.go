// Package breaker provides circuit breakers for HTTP clients and servers:
// one breaker per host on the client side ([Breaker.Transport]) or per route
// on the server side ([Breaker.Handler]), fast-fail timeouts, and an honest
// fallback while a breaker is open.
//
// Each key's breaker is a failsafe-go circuit breaker, created on first use
// and held in a bounded registry ([Config.MaxKeys]). A closed breaker opens
// after 5 consecutive failures, or when at least 20 % of the calls over the
// last 60 s failed and there were at least 20 of them. An open breaker
// refuses calls for 30 s (varied by ±20 % so that breakers that opened
// together do not probe together), then half-opens and lets 3 trial calls
// through: if all succeed it closes, on the first failure it opens again.
// Each call is bounded by a 2 s timeout that counts as a failure. Failures
// are transport errors, timeouts, 429 Too Many Requests and 5xx statuses
// other than 501; other 4xx statuses are not failures. With
// [Config.SlowCallDuration] set, a breaker also opens when the share of
// slow calls reaches [Config.SlowCallRate]. On the server side, a closed
// route breaker counts failures only once 3 distinct callers
// ([Config.MinCallers]) had one. [Config.MaxConcurrent] bounds the calls of
// one key in flight. The registry evicts the least recently used breakers
// when full, closed ones first, so a new key always gets a breaker. A caller's deadline that passes while the
// dependency works counts as a timeout (callers with short per-attempt
// timeouts still open the breaker on a hanging dependency); a call cancelled
// by its caller is not counted, except as a half-open trial, which then
// counts as failed ([Config.IsFailure] overrides the
// classification).
//
// While a breaker is open, no call reaches the dependency. For safe
// methods the answer is a cached response ([Config.Cached], which the
// degrade package's stale cache can fill) or a small fallback document
// ([Config.Fallback]), both marked with a Holdfast-Degraded header. Otherwise
// the client gets an [*OpenError], which matches [ErrOpen] with errors.Is
// (the retry package does not retry it), and the server answers 503 with
// Retry-After set to the breaker's remaining delay, Cache-Control: no-store
// and an application/problem+json body.
//
//	b := breaker.New(breaker.Config{OnStateChange: func(c breaker.StateChange) {
//		log.Printf("%s: %s -> %s", c.Key, c.From, c.To)
//	}})
//	client := &http.Client{Transport: b.Transport(http.DefaultTransport)}
//
// A [Breaker] is safe for concurrent use. [Breaker.State] and
// [Breaker.Snapshot] report the breakers for status pages ([Status] encodes
// as JSON with text states and seconds); the OnStateChange hook is called
// outside any lock (failsafe-go releases its lock before calling
// listeners), and [StateChange.Seq] orders its events. [Config.OnCall]
// reports every call decided.
package breaker
