package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/retry"
)

func TestEveryPackageReportsMetrics(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(&out))
	s := out.String()
	for _, want := range []string{
		"holdfast.auth.fallback{direction=enter} 1",
		"holdfast.auth.fallback{direction=exit} 1",
		"holdfast.auth.refresh_errors{}",
		"holdfast.degrade.mode_changes{to=degraded}",
		"holdfast.degrade.mode_changes{to=normal}",
		"holdfast.breaker.transitions{side=client,to=open}",
		"holdfast.breaker.transitions{side=client,to=closed}",
		"holdfast.retry.retries{status=503}",
		"holdfast.stale.served{}",
		"holdfast.idempotency.events{kind=replay} 1",
		"holdfast.queue.replayed{} 1",
	} {
		assert.Contains(t, s, want)
	}
}

func TestGiveUpReasonIsLowCardinality(t *testing.T) {
	assert.Equal(t, "budget", giveUpReason(fmt.Errorf("x: %w", retry.ErrBudgetExhausted)))
	assert.Equal(t, "attempts", giveUpReason(retry.ErrMaxAttempts))
	assert.Equal(t, "deadline", giveUpReason(retry.ErrDeadline))
	assert.Equal(t, "not-replayable", giveUpReason(&retry.NotReplayableError{Method: "POST"}))
	assert.Equal(t, "other", giveUpReason(errors.New("something else entirely")))
}

func TestAuthHooksCount(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	h, err := Hooks(provider.Meter("test"))
	require.NoError(t, err)
	h.OnRevocation(authfallback.RevocationEvent{Subject: "a"})
	h.OnReconcile(authfallback.ReconcileEvent{Finding: authfallback.RevokedSubject})
	h.OnReconcile(authfallback.ReconcileEvent{Finding: authfallback.RevokedSubject})
	h.OnOfflineIssue(authfallback.OfflineIssueEvent{})
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	lines := strings.Join(format(rm), "\n")
	assert.Contains(t, lines, "holdfast.auth.revocations{} 1")
	assert.Contains(t, lines, "holdfast.auth.reconciled{finding="+authfallback.RevokedSubject+"} 2")
	assert.Contains(t, lines, "holdfast.auth.offline_issued{} 1")
}
