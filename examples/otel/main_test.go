package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPrometheusShowsEveryPackage runs the example and checks what the
// OpenTelemetry Prometheus exporter serves, and the spans recorded.
func TestPrometheusShowsEveryPackage(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(&out, ""))
	s := out.String()
	for _, want := range []string{
		`holdfast_auth_verifications_total{`,
		`holdfast_outcome="ok"`,
		`holdfast_outcome="degraded"`,
		`holdfast_auth_fallback_transitions_total{holdfast_auth_fallback_direction="enter"`,
		`holdfast_auth_fallback_transitions_total{holdfast_auth_fallback_direction="exit"`,
		`holdfast_auth_verification_duration_seconds_count{`,
		`holdfast_breaker_transitions_total{`,
		`holdfast_to="open"`,
		`holdfast_retry_retries_total{http_response_status_code="503"`,
		`holdfast_stale_served_total{`,
		`holdfast_idempotency_outcomes_total{holdfast_outcome="replay",http_request_method="POST"`,
		`holdfast_idempotency_outcomes_total{holdfast_outcome="replayed",http_request_method="POST"`,
		`holdfast_degrade_gate_decisions_total{`,
		`holdfast_degrade_mode_changes_total{`,
		`http_server_request_duration_seconds_count{`,
		`http_route="/items/{id}"`,
		`http_client_request_duration_seconds_count{`,
		"holdfast.auth.verify ",
		"holdfast.breaker ",
		"holdfast.retry ",
		"holdfast.idempotency ",
	} {
		assert.Contains(t, s, want)
	}
	if t.Failed() {
		t.Log(s)
	}
}
