package degrade

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/holdfast-go/holdfast/internal/caller"
	"github.com/holdfast-go/holdfast/internal/problem"
)

// maxAdminBody bounds the body the admin handler reads.
const maxAdminBody = 4 << 10

// maxReasonLen bounds a reason set through the admin handler.
const maxReasonLen = 200

// maxNameLen bounds a dependency name set through the admin handler.
const maxNameLen = 64

// AdminRequest is the JSON body of a PUT or POST to [Controller.AdminHandler].
type AdminRequest struct {
	// Mode is "normal", "degraded" or "read-only" to force that mode, or
	// "auto" to release the override. It is ignored when Dependency is set.
	Mode string `json:"mode,omitempty"`
	// Dependency names the dependency whose State is set.
	Dependency string `json:"dependency,omitempty"`
	// State is "down" to force Dependency down (a kill switch), "up" to
	// force it up (its failures ignored), or "auto" to release the override.
	State string `json:"state,omitempty"`
	// Reason is shown in refusals and in the status, and audited. Control,
	// invisible and bidirectional-formatting characters are removed and it
	// is cut to 200 bytes.
	Reason string `json:"reason,omitempty"`
}

// AdminHandler returns a handler that sets and releases the manual
// overrides over HTTP:
//
//	PUT or POST  {"mode": "read-only", "reason": "IdP incident 4711"}        force a mode
//	PUT or POST  {"mode": "auto"}                                            release the mode
//	PUT or POST  {"dependency": "payments", "state": "down", "reason": "..."} force a dependency down
//	PUT or POST  {"dependency": "payments", "state": "up"}                   force it up
//	PUT or POST  {"dependency": "payments", "state": "auto"}                 release it
//	DELETE                                                                   release the mode
//	GET                                                                      the status (see StatusHandler)
//
// Bodies must be application/json (which a cross-site HTML form cannot
// send), at most 4 KiB. Success answers with the status document. Every
// change is audited ([Config.AuditLog]) with the operator's address and, if
// the admin route authenticates with authfallback, the verified caller.
// With [Config.Overrides] the change is written to the shared store and
// reaches every replica within [Config.OverridePoll]; if the store fails,
// the change holds on this replica only and the answer is 503 with a
// problem of type ProblemOverrideNotShared.
//
// The handler does no authentication or authorization of its own: anyone
// who reaches it can put the service into read-only mode. Mount it only
// behind the service's own admin authentication (and ideally on an
// internal listener), never on the public router as is.
func (c *Controller) AdminHandler() http.Handler {
	return http.HandlerFunc(c.serveAdmin)
}

func (c *Controller) serveAdmin(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodDelete:
		if err := c.setMode(r.Context(), nil, adminBy(r)); err != nil {
			c.notShared(w, r, err)
			return
		}
	case http.MethodPut, http.MethodPost:
		if !c.adminSet(w, r) {
			return
		}
	default:
		w.Header().Set("Allow", "GET, HEAD, PUT, POST, DELETE")
		problem.Render(c.cfg.WriteProblem, w, r, Problem{Type: ProblemMethodNotAllowed, Status: http.StatusMethodNotAllowed})
		return
	}
	c.writeStatus(w, r, http.StatusOK)
}

// adminBy says who set an override, for the audit log.
func adminBy(r *http.Request) string {
	by := "admin " + r.RemoteAddr
	if cl := caller.FromContext(r.Context()); cl != nil {
		by += " " + strconv.Quote(cl.Issuer+" "+cl.Subject)
	}
	return by
}

func (c *Controller) notShared(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusServiceUnavailable
	p := Problem{Type: ProblemOverrideNotShared, Title: "Override not shared", Status: status,
		Detail: "The override holds on this replica only: the override store failed."}
	if errors.Is(err, errTooManyDependencies) {
		p = Problem{Type: ProblemBadAdminRequest, Status: http.StatusBadRequest, Detail: "too many dependencies"}
	}
	problem.Render(c.cfg.WriteProblem, w, r, p)
}

func (c *Controller) adminSet(w http.ResponseWriter, r *http.Request) bool {
	bad := func(status int, detail string) bool {
		problem.Render(c.cfg.WriteProblem, w, r, Problem{Type: ProblemBadAdminRequest, Status: status, Detail: detail})
		return false
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return bad(http.StatusUnsupportedMediaType, "the body must be application/json")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAdminBody+1))
	if err != nil {
		return bad(http.StatusBadRequest, "the body could not be read")
	}
	if len(body) > maxAdminBody {
		return bad(http.StatusRequestEntityTooLarge, "the body is larger than 4 KiB")
	}
	var req AdminRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return bad(http.StatusBadRequest, "the body is not a valid JSON object")
	}
	by := adminBy(r)
	if req.Dependency != "" {
		name := cleanReason(req.Dependency)
		if name == "" || len(name) > maxNameLen || name != strings.TrimSpace(req.Dependency) {
			return bad(http.StatusBadRequest, "dependency must be a name of at most 64 bytes of visible characters")
		}
		var o *DependencyOverride
		switch req.State {
		case "down", "up":
			o = &DependencyOverride{Down: req.State == "down", Reason: req.Reason, At: time.Now()}
		case "auto":
		default:
			return bad(http.StatusBadRequest, `state must be "down", "up" or "auto"`)
		}
		if err := c.setDependency(r.Context(), name, o, by); err != nil {
			c.notShared(w, r, err)
			return false
		}
		return true
	}
	if req.Mode == "auto" {
		if err := c.setMode(r.Context(), nil, by); err != nil {
			c.notShared(w, r, err)
			return false
		}
		return true
	}
	m, ok := parseMode(req.Mode)
	if !ok {
		return bad(http.StatusBadRequest, `mode must be "normal", "degraded", "read-only" or "auto"`)
	}
	if err := c.setMode(r.Context(), &ModeOverride{Mode: m, Reason: req.Reason, At: time.Now()}, by); err != nil {
		c.notShared(w, r, err)
		return false
	}
	return true
}

// cleanReason removes control characters, invisible and bidirectional
// formatting characters (U+200B..U+200F, U+202A..U+202E, U+2066..U+2069,
// U+FEFF and every other format character, the default-ignorable code
// points, line and paragraph separators, private use), and cuts s to
// maxReasonLen bytes on a rune boundary.
func cleanReason(s string) string {
	s = strings.Map(func(r rune) rune {
		if invisible(r) {
			return -1
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > maxReasonLen {
		s = strings.ToValidUTF8(s[:maxReasonLen], "")
	}
	return s
}

func invisible(r rune) bool {
	return unicode.IsControl(r) || r == unicode.ReplacementChar ||
		unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp, unicode.Co, unicode.Cs,
			unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector) ||
		r == 0x115F || r == 0x1160 || r == 0x3164 || r == 0xFFA0 // Hangul fillers
}
