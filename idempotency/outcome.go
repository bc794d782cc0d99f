package idempotency

import (
	"context"
	"net/http"
	"slices"

	"github.com/holdfast-go/holdfast/internal/caller"
	"github.com/holdfast-go/holdfast/internal/problem"
)

// Problem describes an error response the package decided on; see
// Config.WriteProblem. It is the same type in every holdfast package, so one
// function serves them all.
type Problem = problem.Problem

// Problem types (the slug of Problem.Type) of the error responses this
// package writes, and of the outcome it stores for a queued request whose
// replay failed.
const (
	// ProblemKeyMissing: 400, RequireKey and no Idempotency-Key.
	ProblemKeyMissing = "idempotency-key-missing"
	// ProblemKeyInvalid: 400, the Idempotency-Key is not one valid string.
	ProblemKeyInvalid = "idempotency-key-invalid"
	// ProblemBodyUnreadable: 400, the request body could not be read.
	ProblemBodyUnreadable = "idempotency-body-unreadable"
	// ProblemBodyTooLarge: 413, the body is larger than MaxRequestBytes.
	ProblemBodyTooLarge = "idempotency-body-too-large"
	// ProblemKeyInUse: 409, a request with the key is running.
	ProblemKeyInUse = "idempotency-key-in-use"
	// ProblemKeyReused: 422, the key was used with another request.
	ProblemKeyReused = "idempotency-key-reused"
	// ProblemScopeMissing: 500, Config.Scope returned "".
	ProblemScopeMissing = "idempotency-scope-missing"
	// ProblemStoreUnavailable: 503, the store failed; nothing ran.
	ProblemStoreUnavailable = "idempotency-store-unavailable"
	// ProblemNotQueued: 503, Enqueue got a request it cannot queue.
	ProblemNotQueued = "idempotency-not-queued"
	// ProblemReplayFailed: the stored outcome (status 500) of a queued
	// request whose replay failed for good: it panicked, its response could
	// not be stored, or it failed ReplayerConfig.MaxAttempts times. The
	// problem's "attempts" and "last_status" members say how.
	ProblemReplayFailed = "idempotency-replay-failed"
	// ProblemReplayRefused: the stored outcome (status 403) of a queued
	// request that ReplayerConfig.Authorize refused at replay.
	ProblemReplayRefused = "idempotency-replay-refused"
)

// Outcomes reported by Config.OnOutcome and the Replayer.
const (
	// OutcomeFirst: the request ran under its key (Status is its status,
	// stored or not).
	OutcomeFirst = "first"
	// OutcomeReplay: a stored response was replayed.
	OutcomeReplay = "replay"
	// OutcomeConflict: 409, the key is in use.
	OutcomeConflict = "conflict"
	// OutcomeMismatch: 422, the key was used with another request.
	OutcomeMismatch = "mismatch"
	// OutcomeQueued: 202, the request is queued (new, or polled while it
	// waits).
	OutcomeQueued = "queued"
	// OutcomeReplayed: a queued request ran and its response was stored.
	OutcomeReplayed = "replayed"
	// OutcomeFailed: a queued request's replay failed for good; the stored
	// outcome is a ProblemReplayFailed.
	OutcomeFailed = "failed"
	// OutcomeStoreError: a store call failed.
	OutcomeStoreError = "store-error"
)

// OutcomeEvent describes one decision of the handler, Enqueue or the
// Replayer. It carries no key, no body and no credentials.
type OutcomeEvent struct {
	// Request is the request decided on (for the Replayer, the queued
	// request being replayed). Do not modify it or read its body.
	Request *http.Request
	// Outcome is one of the Outcome constants.
	Outcome string
	// Method is the request's method.
	Method string
	// Route is the operation (Config.Route, or the escaped path).
	Route string
	// Status is the response's status, where there is one.
	Status int
	// Attempts is the number of failed replays of a queued request before
	// this outcome (replayed, failed).
	Attempts int
}

// outcome reports an outcome if OnOutcome is set.
func (x *Idempotency) outcome(outcome string, r *http.Request, route string, status int) {
	if f := x.cfg.OnOutcome; f != nil {
		if route == "" {
			route = x.route(r)
		}
		f(OutcomeEvent{Request: r, Outcome: outcome, Method: r.Method, Route: route, Status: status})
	}
}

func (x *Idempotency) route(r *http.Request) string {
	if x.cfg.Route != nil {
		return x.cfg.Route(r)
	}
	return r.URL.EscapedPath()
}

// problem writes p through Config.WriteProblem.
func (x *Idempotency) problem(w http.ResponseWriter, r *http.Request, p Problem) {
	problem.Render(x.cfg.WriteProblem, w, r, p)
}

// CallerFromContext returns the verified caller of a request: the one
// authfallback's Handler put in the context of a live request, or the one
// recorded with a queued request that a Replayer runs (which carries no
// token; authfallback.FromContext reads that recorded caller too). Its
// Issuer and Subject are what records are scoped by: for an offline token,
// the primary issuer's. It is nil when there is none. The result is a copy.
func CallerFromContext(ctx context.Context) *Caller {
	c := caller.FromContext(ctx)
	if c == nil {
		return nil
	}
	return &Caller{Issuer: c.Issuer, Subject: c.Subject, Scopes: slices.Clone(c.Scopes), Reason: c.Reason}
}
