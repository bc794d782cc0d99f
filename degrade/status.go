package degrade

import (
	"encoding/json"
	"net/http"
	"time"
)

// Status is a snapshot of a Controller, as served by
// [Controller.StatusHandler].
type Status struct {
	Mode   Mode      `json:"mode"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since"`
	// Forced is set while a manual override holds the mode.
	Forced bool `json:"forced"`
	// Dependencies is every dependency reported so far or configured.
	Dependencies map[string]DependencyStatus `json:"dependencies"`
	// TimeInMode is the total time spent in each mode since New,
	// including the current stretch, in seconds.
	TimeInMode map[Mode]float64 `json:"time_in_mode_seconds"`
	// Components holds what [Controller.Register]ed functions returned.
	Components map[string]any `json:"components,omitempty"`
	// InFlight is the number of requests the gate let through that are in
	// progress, and MaxConcurrent its bound; both zero without
	// [Config.MaxConcurrent].
	InFlight      int `json:"in_flight,omitempty"`
	MaxConcurrent int `json:"max_concurrent,omitempty"`
}

// DependencyStatus is a dependency's state in a [Status].
type DependencyStatus struct {
	Down bool `json:"down"`
	// Reason is why it is down, "" when it is up.
	Reason string `json:"reason,omitempty"`
	// Causes is the mode the dependency causes while down.
	Causes Mode `json:"causes"`
	// Forced is "down" or "up" while an operator's override holds the
	// dependency's state ([Controller.ForceDependency]), "" otherwise;
	// ForcedReason is the reason given.
	Forced       string `json:"forced,omitempty"`
	ForcedReason string `json:"forced_reason,omitempty"`
	// Since is when it last went down or came back; zero if never.
	Since time.Time `json:"since,omitzero"`
	// Reports and Failures are counted over the window; ErrorRate is
	// Failures/Reports (0 with no reports).
	Reports   int     `json:"reports"`
	Failures  int     `json:"failures"`
	ErrorRate float64 `json:"error_rate"`
	// LastFailure is the time of the last failed report; zero if none.
	LastFailure time.Time `json:"last_failure,omitzero"`
}

// Register adds a component to the status: fn is called (outside any
// lock, possibly concurrently) each time the status is taken, and what it
// returns is encoded as JSON under name, e.g. a breaker's state or the age
// of the cached keys. A nil fn removes name. fn must be cheap and must not
// return secrets: the status is often reachable by a load balancer.
func (c *Controller) Register(name string, fn func() any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if fn == nil {
		delete(c.components, name)
		return
	}
	c.components[name] = fn
}

// Status returns a snapshot of the controller.
func (c *Controller) Status() Status {
	now := time.Now()
	c.mu.Lock()
	ch := c.evalLocked(now, nil) // recount every window
	s := Status{
		Mode:         c.cur.mode,
		Reason:       c.cur.reason,
		Since:        c.cur.since,
		Forced:       c.cur.forced,
		Dependencies: make(map[string]DependencyStatus, len(c.deps)),
		TimeInMode:   make(map[Mode]float64, 3),
	}
	for m := Normal; m <= ReadOnly; m++ {
		d := c.timeIn[m]
		if m == c.cur.mode {
			d += now.Sub(c.cur.since)
		}
		s.TimeInMode[m] = d.Seconds()
	}
	for name, d := range c.deps { // counted by evalLocked above
		ds := DependencyStatus{
			Down: d.down(), Causes: d.causes, Since: d.since,
			Reports: d.total, Failures: d.failed, LastFailure: d.lastErr,
		}
		switch d.forced {
		case forceDown:
			ds.Forced, ds.ForcedReason = "down", d.forceWhy
		case forceUp:
			ds.Forced, ds.ForcedReason = "up", d.forceWhy
		}
		if d.total > 0 {
			ds.ErrorRate = float64(d.failed) / float64(d.total)
		}
		if ds.Down {
			ds.Reason = d.reason()
		}
		s.Dependencies[name] = ds
	}
	if c.lim != nil {
		s.InFlight, s.MaxConcurrent = int(c.lim.inFlight()), int(c.lim.max)
	}
	names := make([]string, 0, len(c.components))
	fns := make([]func() any, 0, len(c.components))
	for name, fn := range c.components {
		names = append(names, name)
		fns = append(fns, fn)
	}
	c.mu.Unlock()
	c.notify(ch)
	if len(fns) > 0 {
		s.Components = make(map[string]any, len(fns))
		for i, fn := range fns {
			s.Components[names[i]] = fn()
		}
	}
	return s
}

// StatusHandler returns a handler that answers with the [Status] as JSON
// (Cache-Control: no-store), for humans and load balancer health checks.
// The status code is [Config.StatusCode] of the mode, 200 by default. HEAD
// gets the status code without the body.
//
// The document names dependencies and reasons; expose it publicly only if
// that is acceptable.
func (c *Controller) StatusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.writeStatus(w, r, 0)
	})
}

func (c *Controller) writeStatus(w http.ResponseWriter, r *http.Request, code int) {
	s := c.Status()
	if code == 0 {
		code = http.StatusOK
		if c.cfg.StatusCode != nil {
			if sc := c.cfg.StatusCode(s.Mode); sc >= 200 && sc <= 599 {
				code = sc
			}
		}
	}
	body, err := json.Marshal(s)
	if err != nil {
		// A component returned something that does not encode: drop them.
		s.Components = map[string]any{"error": "a component could not be encoded"}
		body, _ = json.Marshal(s)
	}
	body = append(body, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
