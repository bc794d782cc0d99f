package main

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRenderFromJSON redraws the chart (and reprints the table) from a
// saved -json report: DRILL_JSON_IN=report.json DRILL_SVG_OUT=drill.svg.
func TestRenderFromJSON(t *testing.T) {
	in := os.Getenv("DRILL_JSON_IN")
	if in == "" {
		t.Skip("set DRILL_JSON_IN to a -json report")
	}
	b, err := os.ReadFile(in)
	require.NoError(t, err)
	var rep report
	require.NoError(t, json.Unmarshal(b, &rep))
	if out := os.Getenv("DRILL_SVG_OUT"); out != "" {
		require.NoError(t, os.WriteFile(out, rep.svg(), 0o644))
	}
	rep.print(os.Stdout)
}
