package stack

import (
	"net/http"
	"strings"
	"testing"

	"github.com/holdfast-go/holdfast/breaker"
	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/retry"
)

// BenchmarkClientLayers builds the README's client stack one layer at a
// time from the stub up, so that the difference between two rows is what
// one layer costs (issue 17):
//
//	go test -run '^$' -bench BenchmarkClientLayers -benchmem -count=3 ./examples/internal/stack/
//
// 1-breaker is breaker.Transport (default 2 s per-call timeout) over the
// stub, 2-retry adds retry.Transport, 3-stale degrade.Stale.Transport and
// 4-idempotency idempotency.Transport, which is the whole stack;
// get-stored-jwt is get-stored with a 1 KiB bearer token.
func BenchmarkClientLayers(b *testing.B) {
	get, _ := http.NewRequest(http.MethodGet, "http://downstream.example/items/42", nil)
	get.Header.Set("Authorization", "Bearer service-token")
	// A bearer JWT is about 1 KiB: Stale hashes it on every GET.
	getJWT, _ := http.NewRequest(http.MethodGet, "http://downstream.example/items/42", nil)
	getJWT.Header.Set("Authorization", "Bearer "+strings.Repeat("e", 1000))
	post, _ := http.NewRequest(http.MethodPost, "http://downstream.example/ledger", http.NoBody)
	layers := []struct {
		name string
		wrap func(http.RoundTripper) http.RoundTripper
	}{
		{"0-stub", func(rt http.RoundTripper) http.RoundTripper { return rt }},
		{"1-breaker", func(rt http.RoundTripper) http.RoundTripper { return breaker.New(breaker.Config{}).Transport(rt) }},
		{"2-retry", func(rt http.RoundTripper) http.RoundTripper {
			return &retry.Transport{Base: breaker.New(breaker.Config{}).Transport(rt)}
		}},
		{"3-stale", func(rt http.RoundTripper) http.RoundTripper {
			return (&degrade.Stale{}).Transport(&retry.Transport{Base: breaker.New(breaker.Config{}).Transport(rt)})
		}},
		{"4-idempotency", readmeClient},
	}
	for _, c := range []struct {
		name string
		stub stubRT
		req  *http.Request
	}{
		{"get-stored", stubRT{}, get},
		{"get-stored-jwt", stubRT{}, getJWT},
		{"get-no-store", stubRT{noStore: true}, get},
		{"post", stubRT{noStore: true}, post},
	} {
		for _, l := range layers {
			b.Run(c.name+"/"+l.name, func(b *testing.B) { benchRoundTrip(b, l.wrap(c.stub), c.req) })
		}
	}
}
