package degrade

import (
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strings"
	"unicode"

	"github.com/holdfast-go/holdfast/internal/problem"
)

// maxAdminBody bounds the body the admin handler reads.
const maxAdminBody = 4 << 10

// maxReasonLen bounds a reason set through the admin handler.
const maxReasonLen = 200

// AdminRequest is the JSON body of a PUT or POST to [Controller.AdminHandler].
type AdminRequest struct {
	// Mode is "normal", "degraded" or "read-only" to force that mode, or
	// "auto" to release the override.
	Mode string `json:"mode"`
	// Reason is shown in refusals and in the status. Control characters
	// are removed and it is cut to 200 bytes.
	Reason string `json:"reason"`
}

// AdminHandler returns a handler that sets and releases the manual
// override over HTTP:
//
//	PUT or POST  {"mode": "read-only", "reason": "IdP incident 4711"}  force a mode
//	PUT or POST  {"mode": "auto"}                                      release
//	DELETE                                                             release
//	GET                                                                the status (see StatusHandler)
//
// Bodies must be application/json (which a cross-site HTML form cannot
// send), at most 4 KiB. Success answers with the status document.
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
		c.Release()
	case http.MethodPut, http.MethodPost:
		if !c.adminSet(w, r) {
			return
		}
	default:
		w.Header().Set("Allow", "GET, HEAD, PUT, POST, DELETE")
		problem.Write(w, problem.Problem{Type: "method-not-allowed", Status: http.StatusMethodNotAllowed})
		return
	}
	c.writeStatus(w, r, http.StatusOK)
}

func (c *Controller) adminSet(w http.ResponseWriter, r *http.Request) bool {
	bad := func(status int, detail string) bool {
		problem.Write(w, problem.Problem{Type: "bad-admin-request", Status: status, Detail: detail})
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
	if req.Mode == "auto" {
		c.Release()
		return true
	}
	m, ok := parseMode(req.Mode)
	if !ok {
		return bad(http.StatusBadRequest, `mode must be "normal", "degraded", "read-only" or "auto"`)
	}
	c.Force(m, cleanReason(req.Reason))
	return true
}

// cleanReason removes control characters and cuts s to maxReasonLen bytes
// on a rune boundary.
func cleanReason(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
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
