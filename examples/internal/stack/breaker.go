package stack

import (
	"net/http"
	"strings"

	"github.com/holdfast-go/holdfast/breaker"
)

// breakerHook reports a breaker's state changes to the Hooks and, for the
// downstream's breaker, to the degrade controller: an open downstream breaker
// marks the downstream down at once, without waiting for the failure rate.
func (s *Service) breakerHook(side string, drivesMode bool) func(breaker.StateChange) {
	h := s.cfg.Hooks
	return func(ch breaker.StateChange) {
		if drivesMode {
			switch ch.To {
			case breaker.Open:
				s.Controller.SetDown(DepDownstream, true, "breaker open")
			case breaker.Closed:
				s.Controller.SetDown(DepDownstream, false, "")
			}
		}
		if h.OnBreaker != nil {
			h.OnBreaker(BreakerChange{Side: side, Key: ch.Key, From: ch.From.String(), To: ch.To.String()})
		}
		if h.OnStateChange != nil {
			h.OnStateChange(ch)
		}
	}
}

// route names the App's routes for the server-side breaker.
func route(r *http.Request) string {
	switch {
	case strings.HasPrefix(r.URL.Path, "/items/"):
		return r.Method + " /items/{id}"
	case r.URL.Path == "/orders":
		return r.Method + " /orders"
	}
	return "other"
}

// breakerStatus is what the status handler shows of a Breaker.
func breakerStatus(b *breaker.Breaker) []map[string]any {
	var out []map[string]any
	for _, st := range b.Snapshot() {
		out = append(out, map[string]any{
			"key": st.Key, "state": st.State.String(), "retry_after_s": st.RetryAfter.Seconds(),
			"requests": st.Requests, "failures": st.Failures,
		})
	}
	return out
}
