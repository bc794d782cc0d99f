package fault

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"

	"github.com/holdfast-go/holdfast/internal/problem"
)

// maxAdminBody bounds the body the admin handler reads.
const maxAdminBody = 4 << 10

// AdminRequest is the JSON body of a PUT or POST to
// [Injector.AdminHandler]: a dependency name and the members of a [Fault]
// (see Fault.MarshalJSON), e.g.
//
//	{"dependency": "payments", "kind": "status", "status": 503, "rate": 0.2}
type AdminRequest struct {
	Dependency string
	Fault      Fault
}

// ParseAdminRequest parses and validates the JSON body of an admin request.
// Unknown members are refused, so a typo ("rat": 0.5) does not silently set
// a fault on every request.
func ParseAdminRequest(body []byte) (AdminRequest, error) {
	var raw struct {
		Dependency string `json:"dependency"`
		faultJSON
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return AdminRequest{}, errors.New("fault: the body is not a valid fault object: " + err.Error())
	}
	if dec.More() {
		return AdminRequest{}, errors.New("fault: the body holds more than one JSON value")
	}
	fj, _ := json.Marshal(raw.faultJSON)
	var f Fault
	if err := f.UnmarshalJSON(fj); err != nil {
		return AdminRequest{}, err
	}
	if !validToken(raw.Dependency, MaxDependencyLength) {
		return AdminRequest{}, errors.New("fault: dependency must be a name of 1 to 64 letters, digits, '-', '_' or '.'")
	}
	if err := f.Validate(); err != nil {
		return AdminRequest{}, err
	}
	return AdminRequest{Dependency: raw.Dependency, Fault: f}, nil
}

// AdminHandler returns a handler that lists, sets and clears faults over
// HTTP (see the package documentation for the requests). Bodies must be
// application/json, at most 4 KiB. Every success answers 200 with the
// faults in force: {"faults": {"idp": {"kind": "outage"}}}. Refusals are
// RFC 9457 problems (400, 405, 413, 415).
//
// The handler does no authentication or authorization of its own: anyone
// who reaches it can take a dependency down. Mount it only behind the
// service's own admin authentication, on an internal listener.
func (in *Injector) AdminHandler() http.Handler {
	return http.HandlerFunc(in.serveAdmin)
}

func (in *Injector) serveAdmin(w http.ResponseWriter, r *http.Request) {
	bad := func(status int, detail string) {
		in.problem(w, r, Problem{Type: ProblemBadAdminRequest, Status: status, Detail: detail, Instance: r.URL.Path})
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodDelete:
		if dep := r.URL.Query().Get("dependency"); dep != "" {
			in.Clear(dep)
		} else {
			in.ClearAll()
		}
	case http.MethodPut, http.MethodPost:
		mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || mt != "application/json" {
			bad(http.StatusUnsupportedMediaType, "the body must be application/json")
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxAdminBody+1))
		if err != nil {
			bad(http.StatusBadRequest, "the body could not be read")
			return
		}
		if len(body) > maxAdminBody {
			bad(http.StatusRequestEntityTooLarge, "the body is larger than 4 KiB")
			return
		}
		req, err := ParseAdminRequest(body)
		if err != nil {
			bad(http.StatusBadRequest, err.Error())
			return
		}
		if err := in.Set(req.Dependency, req.Fault); err != nil {
			bad(http.StatusBadRequest, err.Error())
			return
		}
	default:
		w.Header().Set("Allow", "GET, HEAD, PUT, POST, DELETE")
		in.problem(w, r, Problem{Type: "method-not-allowed", Status: http.StatusMethodNotAllowed, Instance: r.URL.Path})
		return
	}
	faults := in.Faults()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(struct {
		Faults map[string]Fault `json:"faults"`
	}{faults})
}

func (in *Injector) problem(w http.ResponseWriter, r *http.Request, p Problem) {
	problem.Render(in.cfg.WriteProblem, w, r, p)
}
