package degrade

import (
	"context"
	"net/http"
	"time"

	"github.com/holdfast-go/holdfast/internal/httpx"
	"github.com/holdfast-go/holdfast/internal/problem"
)

// Problem describes an error response the gate or the admin handler
// writes; it is the type of Config.WriteProblem's argument, shared by every
// holdfast package.
type Problem = problem.Problem

// Problem types (the slug of the "type" URI) of the responses this package
// writes.
const (
	// ProblemServiceDegraded: a request refused in Degraded mode.
	ProblemServiceDegraded = "service-degraded"
	// ProblemServiceReadOnly: a request refused in ReadOnly mode.
	ProblemServiceReadOnly = "service-read-only"
	// ProblemOverloaded: a request shed by Config.MaxConcurrent.
	ProblemOverloaded = "overloaded"
	// ProblemBadAdminRequest: the admin handler could not use the request.
	ProblemBadAdminRequest = "bad-admin-request"
	// ProblemMethodNotAllowed: the admin handler does not serve the method.
	ProblemMethodNotAllowed = "method-not-allowed"
	// ProblemOverrideNotShared: the override was applied on this replica,
	// but the override store failed, so other replicas do not have it.
	ProblemOverrideNotShared = "override-not-shared"
)

// Decisions of a GateEvent.
const (
	DecisionAllow  = "allow"
	DecisionQueue  = "queue"
	DecisionRefuse = "refuse"
	DecisionShed   = "shed"
)

// ReasonOverloaded is the Holdfast-Degraded reason of a shed request
// answered from the stale cache.
const ReasonOverloaded = "overloaded"

// GateEvent describes one decision of the gate, for Config.OnGate.
type GateEvent struct {
	Request *http.Request
	Tier    Tier
	Mode    Mode
	// Decision is one of the Decision constants.
	Decision string
	// Stale is set for a shed request answered from Config.Stale.
	Stale bool
}

// Handler gates requests by mode and risk tier ([Config.Tier]):
//
//	tier      Normal  Degraded                 ReadOnly
//	Read      pass    pass                     pass
//	Write     pass    Queue, or pass if none   Queue, or refuse if none
//	Critical  pass    refuse                   refuse
//
// A refusal is 503 Service Unavailable with Retry-After and an RFC 9457
// problem document whose "mode" and "reason" members say why. Outside
// Normal mode every response carries the Holdfast-Degraded header with the
// mode ("degraded" or "read-only") among its reasons.
//
// With [Config.MaxConcurrent] the requests that pass are bounded and shed by
// tier when the service is saturated (Read first, then Write, Critical last),
// in every mode; see there.
//
// In Normal mode, without MaxConcurrent and OnGate, the gate is one atomic
// load and adds no allocation.
func (c *Controller) Handler(next http.Handler) http.Handler {
	return &gate{c: c, next: next, plain: c.lim == nil && c.cfg.OnGate == nil}
}

type gate struct {
	c     *Controller
	next  http.Handler
	plain bool // no limiter, no hook: Normal mode is one atomic load
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m := Mode(g.c.mode.Load())
	if m == Normal && g.plain {
		g.next.ServeHTTP(w, r)
		return
	}
	g.serveSlow(w, r, m)
}

func (g *gate) serveSlow(w http.ResponseWriter, r *http.Request, m Mode) {
	c := g.c
	t := c.tier(r)
	if m != Normal {
		httpx.AddDegraded(w.Header(), m.String())
		switch t {
		case Read:
		case Write:
			if q := c.queueHandler(); q != nil {
				c.gateEvent(r, t, m, DecisionQueue, false)
				q.ServeHTTP(w, r)
				return
			}
			if m != Degraded {
				c.gateEvent(r, t, m, DecisionRefuse, false)
				c.refuse(w, r, m)
				return
			}
		default:
			c.gateEvent(r, t, m, DecisionRefuse, false)
			c.refuse(w, r, m)
			return
		}
	}
	if l := c.lim; l != nil {
		if !l.acquire(t) {
			if t == Read && c.cfg.Stale != nil && c.cfg.StaleInside {
				// Stale.Handler, after authentication, answers it.
				g.next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), shedKey{}, c)))
				return
			}
			c.shed(w, r, t, m)
			return
		}
		defer l.release()
	}
	c.gateEvent(r, t, m, DecisionAllow, false)
	g.next.ServeHTTP(w, r)
}

func (c *Controller) gateEvent(r *http.Request, t Tier, m Mode, decision string, stale bool) {
	if f := c.cfg.OnGate; f != nil {
		f(GateEvent{Request: r, Tier: t, Mode: m, Decision: decision, Stale: stale})
	}
}

// shedKey marks a shed Read passed on to Stale.Handler (StaleInside); its
// value is the *Controller.
type shedKey struct{}

// shedInside answers, in s's Handler, a request the gate shed and passed
// on (Config.StaleInside); it reports false for any other request.
func (s *Stale) shedInside(w http.ResponseWriter, r *http.Request) bool {
	if !s.inside.Load() {
		return false
	}
	c, ok := r.Context().Value(shedKey{}).(*Controller)
	if !ok || c.cfg.Stale != s {
		return false
	}
	c.shed(w, r, Read, Mode(c.mode.Load()))
	return true
}

// shed answers a request the limiter did not admit: a Read from the stale
// cache when it can, anything else 503.
func (c *Controller) shed(w http.ResponseWriter, r *http.Request, t Tier, m Mode) {
	if t == Read && c.cfg.Stale != nil {
		h := w.Header()
		prev, had := h[httpx.HeaderDegraded]
		httpx.AddDegraded(h, ReasonOverloaded)
		if c.cfg.Stale.ServeStale(w, r) {
			c.gateEvent(r, t, m, DecisionShed, true)
			return
		}
		if had {
			h[httpx.HeaderDegraded] = prev
		} else {
			delete(h, httpx.HeaderDegraded)
		}
	}
	c.gateEvent(r, t, m, DecisionShed, false)
	problem.Render(c.cfg.WriteProblem, w, r, Problem{
		Type:       ProblemOverloaded,
		Title:      "Service overloaded",
		Status:     http.StatusServiceUnavailable,
		Detail:     "The service has too many requests in progress and did not attempt this one.",
		Extensions: map[string]any{"tier": t.String()},
		RetryAfter: time.Second,
	})
}

func (c *Controller) tier(r *http.Request) Tier {
	if c.cfg.Tier != nil {
		switch t := c.cfg.Tier(r); t {
		case Read, Write, Critical:
			return t
		}
		return Critical
	}
	return DefaultTier(r)
}

// DefaultTier is the tier used when [Config.Tier] is nil: Read for the safe
// methods (GET, HEAD, OPTIONS, TRACE), Write for every other method.
func DefaultTier(r *http.Request) Tier {
	if httpx.IsSafe(r.Method) {
		return Read
	}
	return Write
}

func (c *Controller) refuse(w http.ResponseWriter, r *http.Request, m Mode) {
	c.mu.Lock()
	reason := c.cur.reason
	c.mu.Unlock()
	slug, title := ProblemServiceDegraded, "Service degraded"
	if m == ReadOnly {
		slug, title = ProblemServiceReadOnly, "Service is read-only"
	}
	detail := "The service is in " + m.String() + " mode and does not accept this request now."
	if reason != "" {
		detail += " Reason: " + reason + "."
	}
	problem.Render(c.cfg.WriteProblem, w, r, Problem{
		Type:       slug,
		Title:      title,
		Status:     http.StatusServiceUnavailable,
		Detail:     detail,
		Extensions: map[string]any{"mode": m.String(), "reason": reason},
		RetryAfter: c.retryAfter(),
	})
}
