package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDemoKeepsWorkingThroughIdPOutage(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(slog.New(slog.DiscardHandler), []string{"-n", "4"}, &out))
	s := out.String()
	before, after, ok := strings.Cut(s, "-- IdP down")
	require.True(t, ok, s)
	assert.Equal(t, 2, strings.Count(before, "-> 200 OK"), s)
	assert.Equal(t, 2, strings.Count(before, "-> 201 Created"), s)
	assert.Equal(t, 2, strings.Count(after, "-> 200 OK [degraded: jwks-unreachable]"), s)
	assert.Equal(t, 2, strings.Count(after, "-> 201 Created [degraded: jwks-unreachable]"), s)
	assert.NotContains(t, s, "valid=false")
}

func TestParseNeedsCredentialsForARealAPI(t *testing.T) {
	_, err := parse([]string{"-api", "https://api.example.com"})
	assert.Error(t, err)
	t.Setenv("HOLDFAST_CLIENT_TOKEN_URL", "https://idp.example.com/token")
	c, err := parse([]string{"-api", "https://api.example.com", "-client-id", "x"})
	require.NoError(t, err)
	assert.Equal(t, "https://idp.example.com/token", c.tokenURL)
}
