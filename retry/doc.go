// Package retry provides an http.RoundTripper, [Transport], that retries a
// failed request only when repeating it is safe, and that never makes an
// outage worse.
//
// # What is retried
//
// A request is replayed only if its method is safe (GET, HEAD, OPTIONS,
// TRACE) or it carries an Idempotency-Key header, or it is a PUT or DELETE
// and [Transport.RetryIdempotent] is set; and only if its body can be sent
// again: nil, http.NoBody, or a GetBody func (http.NewRequest sets one for
// in-memory bodies). [Transport.MaxBufferedBody] optionally buffers other
// bodies. A request that is not replayable is sent once; the reason is a
// [*NotReplayableError], reported to [Transport.OnGiveUp] and wrapped in the
// returned [*Error] when the attempt failed without a response.
//
// Retried failures: the statuses 429, 502, 503 and 504, and errors of the
// base RoundTripper (connection refused or reset, timeouts, including
// AttemptTimeout, a closed connection), except those that another attempt
// cannot cure, which are never retried: the cancellation of the request's
// context, TLS and certificate errors, a host name that does not exist, an
// HTTP response to an HTTPS request, and the error of an open circuit
// breaker (one that matches breaker.ErrOpen with errors.Is). Other statuses
// are never retried. Errors are classified with errors.Is and errors.As,
// never by their text.
//
// # When
//
// The backoff is exponential with full jitter: before retry n (from 0) the
// transport waits a uniformly random time in [0, min(MaxDelay,
// BaseDelay*2^n)]. A Retry-After header (seconds or HTTP-date) on 429 or 503
// is the server's instruction and a lower bound: the wait is Retry-After
// plus the jitter, never less and never cut to MaxDelay. A Retry-After longer
// than [Transport.MaxRetryAfter], or a wait that would end past the deadline
// ([Transport.Deadline], 10 s by default, or the request context's), makes
// the transport return the response at once rather than wait or retry early.
// The deadline bounds the retrying; it does not cut the first attempt short,
// which runs as it would without the transport (bound it with the request
// context, http.Client.Timeout or [Transport.AttemptTimeout]).
//
// # How much
//
// A [Budget] bounds retries to a share of the requests (20 % by default)
// over a sliding window, plus a few per second, so that in a total outage
// the upstream sees about 1.2 times the client's requests rather than 3
// times. A Transport without a Budget has one of its own, so even the zero
// value is safe in a retry storm; share one Budget between the transports
// that reach the same upstream. When the budget is spent the transport
// returns the last response at once.
//
// # Contract
//
// RoundTrip does not modify the request, always closes its body, and
// returns a nil error whenever it returns a response. Each discarded
// response is drained (up to 4 KiB) and closed. [Transport.AttemptTimeout]
// bounds an attempt until the returned body is closed, not only until
// RoundTrip returns.
//
// # Wiring
//
// Outermost first, a resilient client stacks:
//
//	idempotency.Transport  adds an Idempotency-Key to POST and PATCH, the same on every attempt
//	retry.Transport        retries what is safe, within its budget and deadline
//	breaker.Transport      per-host breaker; an open breaker fails fast and is not retried
//	http.DefaultTransport
//
// For example:
//
//	brk := breaker.New(breaker.Config{})
//	budget := retry.NewBudget(0.2, 3, 10*time.Second) // shared by the clients of one upstream
//	client := &http.Client{Transport: &idempotency.Transport{
//		Base: &retry.Transport{
//			Base:   brk.Transport(http.DefaultTransport),
//			Budget: budget,
//		},
//	}}
//
// The packages do not import each other: retry recognises the breaker's
// error through errors.Is, and the idempotency key through its header.
//
// # Concurrency
//
// [Transport] and [Budget] are safe for concurrent use. The hooks
// OnRetry and OnGiveUp may be called concurrently, never under a lock, and
// must not block.
package retry
