package breaker

import (
	"net/http"
	"time"

	"github.com/holdfast-go/holdfast/internal/problem"
)

// Problem describes an error response the server side writes; it is the
// type of Config.WriteProblem's argument, shared by every holdfast package.
type Problem = problem.Problem

// Problem types (the slug of the "type" URI) of the responses Handler
// writes.
const (
	// ProblemCircuitOpen: the route's breaker is open; the request was not
	// attempted.
	ProblemCircuitOpen = "circuit-open"
	// ProblemConcurrencyLimit: Config.MaxConcurrent calls of the route were
	// in flight.
	ProblemConcurrencyLimit = "concurrency-limit"
)

// Sides of a CallEvent.
const (
	SideClient = "client"
	SideServer = "server"
)

// Outcomes of a CallEvent.
const (
	// OutcomeSuccess: the call went through and was not a failure.
	OutcomeSuccess = "success"
	// OutcomeFailure: the call went through and failed (Config.IsFailure,
	// a timeout or a panic).
	OutcomeFailure = "failure"
	// OutcomeCanceled: the caller gave up; the call was not counted.
	OutcomeCanceled = "canceled"
	// OutcomeRejected: refused by an open breaker (503 or *OpenError).
	OutcomeRejected = "rejected"
	// OutcomeFallback: refused by an open breaker and answered by
	// Config.Cached or Config.Fallback.
	OutcomeFallback = "fallback"
	// OutcomeLimited: refused by Config.MaxConcurrent.
	OutcomeLimited = "limited"
)

// CallEvent describes one call a Breaker decided, for Config.OnCall.
type CallEvent struct {
	// Request is the request of the call (on the client side, the caller's
	// request to RoundTrip). Do not modify it.
	Request *http.Request
	// Side is SideClient (Transport) or SideServer (Handler).
	Side string
	// Key is the breaker's key.
	Key string
	// State is the breaker's state after the call was recorded.
	State State
	// Outcome is one of the Outcome constants.
	Outcome string
	// Status is the response status, 0 when none (an error, a refusal on
	// the client side).
	Status int
	// Slow is set for a call that took longer than Config.SlowCallDuration.
	Slow bool
	// Latency is how long the call took; zero for a refused call.
	Latency time.Duration
}
