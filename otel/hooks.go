package holdfastotel

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/breaker"
	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/retry"
)

// Attribute keys of holdfast's own metrics and spans.
const (
	KeyOutcome   = attribute.Key("holdfast.outcome")
	KeyReason    = attribute.Key("holdfast.reason")
	KeyCached    = attribute.Key("holdfast.auth.cached")
	KeyIssuer    = attribute.Key("holdfast.auth.issuer")
	KeyDirection = attribute.Key("holdfast.auth.fallback.direction")
	KeyFinding   = attribute.Key("holdfast.auth.finding")
	KeySide      = attribute.Key("holdfast.breaker.side")
	KeyState     = attribute.Key("holdfast.breaker.state")
	KeyBreaker   = attribute.Key("holdfast.breaker.key")
	KeyFrom      = attribute.Key("holdfast.breaker.from")
	KeyTo        = attribute.Key("holdfast.to")
	KeyAttempt   = attribute.Key("holdfast.retry.attempt")
	KeyDecision  = attribute.Key("holdfast.degrade.decision")
	KeyTier      = attribute.Key("holdfast.degrade.tier")
	KeyMode      = attribute.Key("holdfast.degrade.mode")
	KeyForced    = attribute.Key("holdfast.degrade.forced")
	KeyStale     = attribute.Key("holdfast.stale")
	KeyDegraded  = attribute.Key("holdfast.degraded")
)

// Semantic-convention attribute keys (OpenTelemetry semconv v1.43).
const (
	keyMethod  = attribute.Key("http.request.method")
	keyStatus  = attribute.Key("http.response.status_code")
	keyRoute   = attribute.Key("http.route")
	keyServer  = attribute.Key("server.address")
	keyErrType = attribute.Key("error.type")
)

// OnVerify records a verification (authfallback.Config.OnVerify): the
// holdfast.auth.verifications counter, its duration, and a
// holdfast.auth.verify span below the request's span, timed as the
// verification was.
func (i *Instrumentation) OnVerify(ev authfallback.VerifyEvent) {
	ctx := ctxOf(ev.Context)
	i.verifications.Add(ctx, 1, i.sets.verify.get(verifyKey{ev.Outcome, ev.Reason, ev.Cached}, func() []attribute.KeyValue {
		return []attribute.KeyValue{KeyOutcome.String(ev.Outcome), KeyReason.String(ev.Reason), KeyCached.Bool(ev.Cached)}
	}))
	// "\x00" is no reason: the duration's set has the outcome only.
	i.verifyDur.Record(ctx, ev.Latency.Seconds(), i.sets.verify.get(verifyKey{outcome: ev.Outcome, reason: "\x00"}, func() []attribute.KeyValue {
		return []attribute.KeyValue{KeyOutcome.String(ev.Outcome)}
	}))
	fail := ""
	if ev.Outcome == authfallback.OutcomeUnavailable {
		fail = "verification unavailable"
	}
	attrs := []attribute.KeyValue{KeyOutcome.String(ev.Outcome), KeyCached.Bool(ev.Cached)}
	if ev.Reason != "" {
		attrs = append(attrs, KeyReason.String(ev.Reason))
	}
	if ev.Issuer != "" {
		attrs = append(attrs, KeyIssuer.String(ev.Issuer))
	}
	if ev.Err != nil {
		attrs = append(attrs, keyErrType.String(authErrType(ev.Err)))
	}
	i.span(ctx, "holdfast.auth.verify", ev.Latency, fail, attrs...)
}

// authErrType maps a verification error to a low-cardinality error.type.
func authErrType(err error) string {
	switch {
	case errors.Is(err, authfallback.ErrNoToken):
		return "no_token"
	case errors.Is(err, authfallback.ErrRevoked):
		return "revoked"
	case errors.Is(err, authfallback.ErrOutsidePolicy):
		return "outside_policy"
	case errors.Is(err, authfallback.ErrFallbackExpired):
		return "fallback_expired"
	case errors.Is(err, authfallback.ErrInvalidToken):
		return "invalid_token"
	case errors.Is(err, authfallback.ErrUnavailable):
		return "unavailable"
	}
	return "_OTHER"
}

// OnFallbackEnter records a Verifier entering fallback mode.
func (i *Instrumentation) OnFallbackEnter(ev authfallback.FallbackEvent) {
	ctx := context.Background()
	i.fallbacks.Add(ctx, 1, metric.WithAttributes(KeyDirection.String("enter"), KeyReason.String(ev.Reason)))
	i.fallbackActive.Add(ctx, 1)
}

// OnFallbackExit records a Verifier leaving fallback mode.
func (i *Instrumentation) OnFallbackExit(ev authfallback.FallbackEvent) {
	ctx := context.Background()
	i.fallbacks.Add(ctx, 1, metric.WithAttributes(KeyDirection.String("exit"), KeyReason.String(ev.Reason)))
	i.fallbackActive.Add(ctx, -1)
}

// OnRefreshError records a failed refresh of a key set or revocation list.
func (i *Instrumentation) OnRefreshError(authfallback.RefreshErrorEvent) {
	i.refreshErrors.Add(context.Background(), 1)
}

// OnReconcile records a token found revoked or invalid after an outage.
func (i *Instrumentation) OnReconcile(ev authfallback.ReconcileEvent) {
	i.reconciled.Add(context.Background(), 1, metric.WithAttributes(KeyFinding.String(ev.Finding)))
}

// OnRevocation records a revocation seen for the first time.
func (i *Instrumentation) OnRevocation(authfallback.RevocationEvent) {
	i.revocations.Add(context.Background(), 1)
}

// OnOfflineIssue records an offline token minted.
func (i *Instrumentation) OnOfflineIssue(authfallback.OfflineIssueEvent) {
	i.offline.Add(context.Background(), 1)
}

// OnTokenRefresh records a TokenSource refresh (its duration and a
// holdfast.auth.token_refresh span).
func (i *Instrumentation) OnTokenRefresh(ev authfallback.TokenRefreshEvent) {
	ctx := context.Background()
	i.tokenRefresh.Record(ctx, ev.Latency.Seconds(), metric.WithAttributes(KeyOutcome.String("success")))
	i.span(ctx, "holdfast.auth.token_refresh", ev.Latency, "", KeyOutcome.String("success"))
}

// OnTokenRefreshError records a failed TokenSource refresh.
func (i *Instrumentation) OnTokenRefreshError(ev authfallback.TokenRefreshErrorEvent) {
	ctx := context.Background()
	i.tokenRefresh.Record(ctx, ev.Latency.Seconds(), metric.WithAttributes(KeyOutcome.String("error")))
	i.span(ctx, "holdfast.auth.token_refresh", ev.Latency, "token endpoint failed",
		KeyOutcome.String("error"), KeyAttempt.Int(ev.Attempt))
}

// OnRetry records a retry and a holdfast.retry span below the call's.
func (i *Instrumentation) OnRetry(ev retry.RetryEvent) {
	ctx := reqCtx(ev.Request)
	i.retries.Add(ctx, 1, metric.WithAttributes(keyStatus.Int(ev.StatusCode)))
	attrs := []attribute.KeyValue{KeyAttempt.Int(ev.Attempt), attribute.Float64("holdfast.retry.delay", ev.Delay.Seconds())}
	if ev.StatusCode != 0 {
		attrs = append(attrs, keyStatus.Int(ev.StatusCode))
	}
	i.span(ctx, "holdfast.retry", 0, "", attrs...)
}

// OnGiveUp records a failed attempt that was not retried.
func (i *Instrumentation) OnGiveUp(ev retry.GiveUpEvent) {
	ctx := reqCtx(ev.Request)
	reason := GiveUpReason(ev.Reason)
	i.giveUps.Add(ctx, 1, metric.WithAttributes(KeyReason.String(reason)))
	i.span(ctx, "holdfast.retry.give_up", 0, reason, KeyReason.String(reason), KeyAttempt.Int(ev.Attempts))
}

// GiveUpReason maps a retry give-up reason to a low-cardinality value:
// "budget", "attempts", "deadline", "not-replayable" or "other".
func GiveUpReason(err error) string {
	var nr *retry.NotReplayableError
	switch {
	case errors.Is(err, retry.ErrBudgetExhausted):
		return "budget"
	case errors.Is(err, retry.ErrMaxAttempts):
		return "attempts"
	case errors.Is(err, retry.ErrDeadline):
		return "deadline"
	case errors.As(err, &nr):
		return "not-replayable"
	}
	return "other"
}

// OnCall records a breaker decision and a holdfast.breaker span, timed as
// the call was (zero for a refused call).
func (i *Instrumentation) OnCall(ev breaker.CallEvent) {
	ctx := reqCtx(ev.Request)
	state := ev.State.String()
	i.breakerCalls.Add(ctx, 1, i.sets.breaker.get(breakerKey{side: ev.Side, outcome: ev.Outcome, state: state}, func() []attribute.KeyValue {
		return []attribute.KeyValue{KeySide.String(ev.Side), KeyOutcome.String(ev.Outcome), KeyState.String(state)}
	}))
	if ev.Latency > 0 {
		i.breakerDur.Record(ctx, ev.Latency.Seconds(), i.sets.breaker.get(breakerKey{side: ev.Side, outcome: ev.Outcome, latency: true}, func() []attribute.KeyValue {
			return []attribute.KeyValue{KeySide.String(ev.Side), KeyOutcome.String(ev.Outcome)}
		}))
	}
	fail := ""
	switch ev.Outcome {
	case breaker.OutcomeRejected:
		fail = "circuit open"
	case breaker.OutcomeLimited:
		fail = "concurrency limit"
	}
	attrs := []attribute.KeyValue{KeySide.String(ev.Side), KeyBreaker.String(ev.Key), KeyState.String(state), KeyOutcome.String(ev.Outcome)}
	if ev.Status != 0 {
		attrs = append(attrs, keyStatus.Int(ev.Status))
	}
	i.span(ctx, "holdfast.breaker", ev.Latency, fail, attrs...)
}

// OnStateChange records a breaker state change.
func (i *Instrumentation) OnStateChange(ch breaker.StateChange) {
	i.breakerTransitions.Add(context.Background(), 1, metric.WithAttributes(
		KeyBreaker.String(ch.Key), KeyFrom.String(ch.From.String()), KeyTo.String(ch.To.String())))
}

// OnOutcome records an idempotency decision and a holdfast.idempotency
// span below the request's (for a replay, below holdfast.idempotency.replay
// when the Replayer's Handler was instrumented).
func (i *Instrumentation) OnOutcome(ev idempotency.OutcomeEvent) {
	ctx := reqCtx(ev.Request)
	method := methodOf(ev.Method)
	i.idemOutcomes.Add(ctx, 1, i.sets.idem.get(idemKey{ev.Outcome, method}, func() []attribute.KeyValue {
		return []attribute.KeyValue{KeyOutcome.String(ev.Outcome), keyMethod.String(method)}
	}))
	fail := ""
	if ev.Outcome == idempotency.OutcomeStoreError || ev.Outcome == idempotency.OutcomeFailed {
		fail = ev.Outcome
	}
	attrs := []attribute.KeyValue{KeyOutcome.String(ev.Outcome), keyMethod.String(method)}
	if ev.Status != 0 {
		attrs = append(attrs, keyStatus.Int(ev.Status))
	}
	if ev.Attempts != 0 {
		attrs = append(attrs, KeyAttempt.Int(ev.Attempts))
	}
	i.span(ctx, "holdfast.idempotency", 0, fail, attrs...)
}

// OnGate records a gate decision and, outside "allow", a holdfast.gate
// event on the request's span.
func (i *Instrumentation) OnGate(ev degrade.GateEvent) {
	ctx := reqCtx(ev.Request)
	tier, mode := ev.Tier.String(), ev.Mode.String()
	i.gate.Add(ctx, 1, i.sets.gate.get(gateKey{ev.Decision, tier, mode, ev.Stale}, func() []attribute.KeyValue {
		return []attribute.KeyValue{KeyDecision.String(ev.Decision), KeyTier.String(tier), KeyMode.String(mode), KeyStale.Bool(ev.Stale)}
	}))
	if ev.Decision != degrade.DecisionAllow {
		if s := trace.SpanFromContext(ctx); s.IsRecording() {
			s.AddEvent("holdfast.gate", trace.WithAttributes(KeyDecision.String(ev.Decision),
				KeyTier.String(ev.Tier.String()), KeyMode.String(ev.Mode.String()), KeyStale.Bool(ev.Stale)))
		}
	}
}

// OnModeChange records a change of the service's mode.
func (i *Instrumentation) OnModeChange(ch degrade.ModeChange) {
	ctx := context.Background()
	i.modeChanges.Add(ctx, 1, metric.WithAttributes(KeyTo.String(ch.To.String()), KeyForced.Bool(ch.Forced)))
	i.mode.Record(ctx, int64(ch.To))
}

// OnStale records a stale answer and a holdfast.stale event on the
// request's span.
func (i *Instrumentation) OnStale(ev degrade.StaleEvent) {
	ctx := reqCtx(ev.Request)
	i.stale.Add(ctx, 1)
	i.staleAge.Record(ctx, ev.Age.Seconds())
	if s := trace.SpanFromContext(ctx); s.IsRecording() {
		attrs := []attribute.KeyValue{attribute.Float64("holdfast.stale.age", ev.Age.Seconds())}
		if ev.Status != 0 {
			attrs = append(attrs, keyStatus.Int(ev.Status))
		}
		s.AddEvent("holdfast.stale", trace.WithAttributes(attrs...))
	}
}
