package httpx

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestAddDegraded(t *testing.T) {
	cases := []struct {
		name   string
		before []string
		add    string
		want   []string
	}{
		{"empty", nil, "stale-if-error", []string{"stale-if-error"}},
		{"append", []string{"jwks-unreachable"}, "stale-if-error", []string{"jwks-unreachable, stale-if-error"}},
		{"no repeat", []string{"read-only, stale-if-error"}, "stale-if-error", []string{"read-only, stale-if-error"}},
		{"same", []string{"circuit-open"}, "circuit-open", []string{"circuit-open"}},
		{"several lines joined", []string{"a", "b,c"}, "d", []string{"a, b, c, d"}},
		{"empty reason", []string{"a"}, " ", []string{"a"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.before != nil {
				h[HeaderDegraded] = tc.before
			}
			AddDegraded(h, tc.add)
			assert.Equal(t, tc.want, h[HeaderDegraded])
		})
	}
	h := http.Header{}
	AddDegraded(h, "read-only")
	AddDegraded(h, "jwks-unreachable")
	AddDegraded(h, "stale-if-error")
	assert.Equal(t, []string{"read-only", "jwks-unreachable", "stale-if-error"}, DegradedReasons(h))
}

func FuzzAddDegraded(f *testing.F) {
	f.Add("a, b", "c")
	f.Add("", "x")
	f.Fuzz(func(t *testing.T, before, reason string) {
		h := http.Header{HeaderDegraded: {before}}
		AddDegraded(h, reason)
		assert.LessOrEqual(t, len(h[HeaderDegraded]), 1)
		n := len(DegradedReasons(h))
		AddDegraded(h, reason)
		assert.Equal(t, n, len(DegradedReasons(h)), "adding a reason twice lists it once")
	})
}
