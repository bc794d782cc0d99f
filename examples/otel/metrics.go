package main

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/examples/internal/stack"
	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/retry"
)

// Hooks returns stack.Hooks that record every holdfast package's events as
// OpenTelemetry metrics on meter. The hooks only add to counters: they never
// block, as the packages require.
//
//	holdfast.auth.fallback          authfallback entered/left fallback mode (direction)
//	holdfast.auth.refresh_errors    failed JWKS refreshes
//	holdfast.auth.revocations       revocations seen for the first time
//	holdfast.auth.reconciled        tokens accepted during an outage found revoked or invalid after it (finding)
//	holdfast.auth.offline_issued    offline tokens minted
//	holdfast.degrade.mode_changes   the service's mode changed (to)
//	holdfast.breaker.transitions    a breaker changed state (side, to)
//	holdfast.retry.retries          retries made (status)
//	holdfast.retry.give_ups         retries refused (reason: budget, attempts, deadline, not-replayable)
//	holdfast.stale.served           responses served stale
//	holdfast.idempotency.events     replays, conflicts, releases, store errors (kind)
//	holdfast.queue.replayed         queued writes replayed after an outage
func Hooks(meter metric.Meter) (stack.Hooks, error) {
	var errs []error
	counter := func(name, desc string) metric.Int64Counter {
		c, err := meter.Int64Counter(name, metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	fallback := counter("holdfast.auth.fallback", "authfallback entries into and exits from fallback mode")
	refreshErrs := counter("holdfast.auth.refresh_errors", "failed refreshes of the JWKS")
	revocations := counter("holdfast.auth.revocations", "revocations seen for the first time")
	reconciled := counter("holdfast.auth.reconciled", "tokens accepted degraded and found revoked or invalid once the IdP was back")
	offline := counter("holdfast.auth.offline_issued", "offline tokens minted")
	modes := counter("holdfast.degrade.mode_changes", "changes of the service's mode")
	breakers := counter("holdfast.breaker.transitions", "circuit breaker state changes")
	retries := counter("holdfast.retry.retries", "retries made by retry.Transport")
	giveUps := counter("holdfast.retry.give_ups", "failed attempts retry.Transport did not retry")
	stale := counter("holdfast.stale.served", "responses served stale by degrade.Stale")
	idem := counter("holdfast.idempotency.events", "idempotency replays, conflicts, releases and store errors")
	replayed := counter("holdfast.queue.replayed", "queued writes replayed after an outage")
	if err := errors.Join(errs...); err != nil {
		return stack.Hooks{}, err
	}
	ctx := context.Background()
	kv := func(k, v string) metric.AddOption { return metric.WithAttributes(attribute.String(k, v)) }
	return stack.Hooks{
		OnFallbackEnter: func(authfallback.FallbackEvent) { fallback.Add(ctx, 1, kv("direction", "enter")) },
		OnFallbackExit:  func(authfallback.FallbackEvent) { fallback.Add(ctx, 1, kv("direction", "exit")) },
		OnRefreshError:  func(authfallback.RefreshErrorEvent) { refreshErrs.Add(ctx, 1) },
		OnRevocation:    func(authfallback.RevocationEvent) { revocations.Add(ctx, 1) },
		OnReconcile: func(ev authfallback.ReconcileEvent) {
			reconciled.Add(ctx, 1, kv("finding", ev.Finding))
		},
		OnOfflineIssue: func(authfallback.OfflineIssueEvent) { offline.Add(ctx, 1) },
		OnModeChange:   func(ch degrade.ModeChange) { modes.Add(ctx, 1, kv("to", ch.To.String())) },
		OnBreaker: func(ch stack.BreakerChange) {
			breakers.Add(ctx, 1, metric.WithAttributes(attribute.String("side", ch.Side), attribute.String("to", ch.To)))
		},
		OnRetry: func(ev retry.RetryEvent) {
			retries.Add(ctx, 1, metric.WithAttributes(attribute.Int("status", ev.StatusCode)))
		},
		OnGiveUp: func(ev retry.GiveUpEvent) { giveUps.Add(ctx, 1, kv("reason", giveUpReason(ev.Reason))) },
		OnStale:  func(degrade.StaleEvent) { stale.Add(ctx, 1) },
		OnIdempotency: func(kind string, _ idempotency.Event) {
			idem.Add(ctx, 1, kv("kind", kind))
		},
		OnReplayed: func(n int, _ error) { replayed.Add(ctx, int64(n)) },
	}, nil
}

// giveUpReason maps a retry give-up reason to a low-cardinality attribute.
func giveUpReason(err error) string {
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
