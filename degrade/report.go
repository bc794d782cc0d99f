package degrade

import (
	"errors"
	"net/http"
	"time"
)

// Recovered tells the Controller that dependency answers again: a probe, a
// breaker's half-open trial or a replayed write succeeded after failures.
// The failures in its window are forgotten, so the mode follows at once
// rather than once they age out of [Config.Window] (a minute by default,
// during which a service with no other traffic, e.g. write-only clients
// whose writes are all queued, would stay degraded). Reports that arrive
// afterwards count as usual; a dependency marked down by
// [Controller.SetDown] stays down. An unknown dependency is ignored.
func (c *Controller) Recovered(dependency string) {
	now := time.Now()
	c.mu.Lock()
	d := c.deps[dependency]
	if d == nil {
		c.mu.Unlock()
		return
	}
	d.win = newWindow(c.window(), now)
	ch := c.evalLocked(now, d)
	c.mu.Unlock()
	c.notify(ch)
}

// ReportTransport reports the outcome of every call it sends to a
// Controller: put it at the bottom of a client stack (below retries and the
// breaker), so each attempt that reached the dependency counts, and calls
// that a breaker refused do not. Its zero Base is http.DefaultTransport. It
// is safe for concurrent use if Base is.
type ReportTransport struct {
	// Base sends the calls. If nil, http.DefaultTransport.
	Base http.RoundTripper
	// Controller receives the reports. It must not be nil.
	Controller *Controller
	// Dependency is the name reported.
	Dependency string
	// Failed reports whether a call failed. If nil, a transport error or
	// a 5xx response is a failure (and a 429 is not).
	Failed func(*http.Response, error) bool
}

var errServerError = errors.New("degrade: dependency answered 5xx")

// RoundTrip implements http.RoundTripper.
func (t *ReportTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(req)
	failed := err != nil || resp.StatusCode >= 500
	if t.Failed != nil {
		failed = t.Failed(resp, err)
	}
	switch {
	case !failed:
		t.Controller.Report(t.Dependency, nil)
	case err != nil:
		t.Controller.Report(t.Dependency, err)
	default:
		t.Controller.Report(t.Dependency, errServerError)
	}
	return resp, err
}

var _ http.RoundTripper = (*ReportTransport)(nil)
