package authfallback

import (
	"context"
	"errors"
	"time"

	"github.com/holdfast-go/holdfast/internal/problem"
)

// Problem is an RFC 9457 problem as written by [Verifier.Handler] and
// [OfflineIssuer.ExchangeHandler], handed to a WriteProblem hook. It is the
// same type in every holdfast package, so one function fits all.
type Problem = problem.Problem

// Outcomes of a verification, in [VerifyEvent.Outcome].
const (
	// OutcomeOK: accepted, not degraded.
	OutcomeOK = "ok"
	// OutcomeDegraded: accepted degraded (Reason says why).
	OutcomeDegraded = "degraded"
	// OutcomeRefused: refused, the token is at fault (401).
	OutcomeRefused = "refused"
	// OutcomeUnavailable: the token could not be verified now (503).
	OutcomeUnavailable = "unavailable"
)

// VerifyEvent describes one verification, for metrics and tracing. It never
// carries the token.
type VerifyEvent struct {
	// Context is the context Verify was called with (the request's, from
	// Handler): it carries the request's trace, for a span or an exemplar.
	Context context.Context
	// Issuer is the "iss" of an accepted token, "" when refused.
	Issuer string
	// Outcome is OutcomeOK, OutcomeDegraded, OutcomeRefused or
	// OutcomeUnavailable.
	Outcome string
	// Reason is the degraded reason of an accepted token ("" if not
	// degraded).
	Reason string
	// Err is the error of a refused or unavailable verification.
	Err error
	// Cached is true when the answer came from the verified-token cache.
	Cached bool
	// Latency is how long the verification took.
	Latency time.Duration
}

func (v *Verifier) reportVerify(ctx context.Context, res *Result, err error, cached bool, start time.Time) {
	ev := VerifyEvent{Context: ctx, Err: err, Cached: cached, Latency: time.Since(start)}
	switch {
	case err == nil:
		ev.Issuer, ev.Reason = res.Issuer, res.Reason
		ev.Outcome = OutcomeOK
		if res.Degraded {
			ev.Outcome = OutcomeDegraded
		}
	case errors.Is(err, ErrUnavailable):
		ev.Outcome = OutcomeUnavailable
	default:
		ev.Outcome = OutcomeRefused
	}
	v.cfg.OnVerify(ev)
}
