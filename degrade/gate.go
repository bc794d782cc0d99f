package degrade

import (
	"net/http"

	"github.com/holdfast-go/holdfast/internal/httpx"
	"github.com/holdfast-go/holdfast/internal/problem"
)

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
// mode ("degraded" or "read-only"). In Normal mode the gate is one atomic
// load and adds no allocation.
func (c *Controller) Handler(next http.Handler) http.Handler {
	return &gate{c: c, next: next}
}

type gate struct {
	c    *Controller
	next http.Handler
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m := Mode(g.c.mode.Load())
	if m == Normal {
		g.next.ServeHTTP(w, r)
		return
	}
	g.serveDegraded(w, r, m)
}

func (g *gate) serveDegraded(w http.ResponseWriter, r *http.Request, m Mode) {
	httpx.AddDegraded(w.Header(), m.String())
	switch g.c.tier(r) {
	case Read:
		g.next.ServeHTTP(w, r)
		return
	case Write:
		if q := g.c.cfg.Queue; q != nil {
			q.ServeHTTP(w, r)
			return
		}
		if m == Degraded {
			g.next.ServeHTTP(w, r)
			return
		}
	}
	g.c.refuse(w, r, m)
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
	slug, title := "service-degraded", "Service degraded"
	if m == ReadOnly {
		slug, title = "service-read-only", "Service is read-only"
	}
	detail := "The service is in " + m.String() + " mode and does not accept this request now."
	if reason != "" {
		detail += " Reason: " + reason + "."
	}
	problem.Write(w, problem.Problem{
		Type:       slug,
		Title:      title,
		Status:     http.StatusServiceUnavailable,
		Detail:     detail,
		Extensions: map[string]any{"mode": m.String(), "reason": reason},
		RetryAfter: c.retryAfter(),
	})
}
