package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/idempotency"
)

// MaxOrderBytes bounds the body of POST /orders; a larger one is answered
// 413 Content Too Large.
const MaxOrderBytes = 64 << 10

// App is the example service's own code, the part a user writes: it serves
// GET /items/{id} by reading the downstream catalogue and POST /orders by
// writing to the downstream ledger. It knows nothing of holdfast beyond the
// Client it is given and DownstreamKey. The naive stack of the outage drill
// runs the same App with a plain client.
type App struct {
	// Client calls the downstream.
	Client *http.Client
	// Downstream is the downstream's base URL.
	Downstream string
	// DownstreamKey, if not nil, returns the Idempotency-Key to send with
	// the downstream write of r ("" for none). Deriving it from the
	// caller's own key makes a retried or replayed order the same write
	// downstream as well.
	DownstreamKey func(r *http.Request) string
	// Authorize, if not nil, reports whether the request may use scope:
	// "read" for GET /items, "write" for POST /orders. A request it refuses
	// is answered 403.
	Authorize func(r *http.Request, scope string) bool
	// Error writes an error answer. If nil, http.Error.
	Error func(w http.ResponseWriter, r *http.Request, status int, detail string)
}

// ServeHTTP implements http.Handler.
func (a *App) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodGet && len(r.URL.Path) > len("/items/") && r.URL.Path[:len("/items/")] == "/items/":
		if a.allowed(w, r, "read") {
			a.item(w, r, r.URL.Path[len("/items/"):])
		}
	case r.Method == http.MethodPost && r.URL.Path == "/orders":
		if a.allowed(w, r, "write") {
			a.order(w, r)
		}
	default:
		a.fail(w, r, http.StatusNotFound, "no such route")
	}
}

func (a *App) allowed(w http.ResponseWriter, r *http.Request, scope string) bool {
	if a.Authorize == nil || a.Authorize(r, scope) {
		return true
	}
	a.fail(w, r, http.StatusForbidden, "the token lacks the scope "+scope)
	return false
}

func (a *App) fail(w http.ResponseWriter, r *http.Request, status int, detail string) {
	if a.Error != nil {
		a.Error(w, r, status, detail)
		return
	}
	http.Error(w, detail, status)
}

// relayed are the downstream response headers passed on to the caller: the
// ones that say a response came from a fallback.
var relayed = []string{"Content-Type", "Cache-Control", "Age", "Cache-Status", degrade.HeaderDegraded}

func (a *App) item(w http.ResponseWriter, r *http.Request, id string) {
	// id is decoded: "7%3Fx=1" is "7?x=1" and "..%2fledger" is "../ledger".
	// It is one path segment or nothing; forwarded, it is escaped again, so
	// it can neither add a query nor climb to another downstream path.
	if id == "" || id == "." || id == ".." || strings.ContainsRune(id, '/') {
		a.fail(w, r, http.StatusNotFound, "no such item")
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, a.Downstream+"/items/"+url.PathEscape(id), nil)
	if err != nil {
		a.fail(w, r, http.StatusBadRequest, "bad item id")
		return
	}
	a.relay(w, r, req, http.StatusOK)
}

func (a *App) order(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxOrderBytes))
	if tooLarge := (*http.MaxBytesError)(nil); errors.As(err, &tooLarge) {
		a.fail(w, r, http.StatusRequestEntityTooLarge, "an order is at most 64 KiB")
		return
	}
	var v struct {
		WriteID string `json:"write_id"`
	}
	if err != nil || json.Unmarshal(body, &v) != nil || v.WriteID == "" {
		a.fail(w, r, http.StatusBadRequest, "an order is a JSON object with a write_id")
		return
	}
	// The write must not be abandoned half-way because the caller went away:
	// the downstream call keeps its own deadlines.
	ctx := context.WithoutCancel(r.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.Downstream+"/ledger", bytes.NewReader(body))
	if err != nil {
		a.fail(w, r, http.StatusInternalServerError, "cannot build the ledger call")
		return
	}
	req.Header.Set("Content-Type", "application/json")
	if a.DownstreamKey != nil {
		if k := a.DownstreamKey(r); k != "" {
			req.Header.Set(idempotency.HeaderKey, k)
		}
	}
	a.relay(w, r, req, http.StatusCreated)
}

func (a *App) relay(w http.ResponseWriter, r *http.Request, req *http.Request, want int) {
	resp, err := a.Client.Do(req)
	if err != nil {
		a.fail(w, r, http.StatusBadGateway, "downstream unreachable")
		return
	}
	defer drainClose(resp.Body)
	if resp.StatusCode != want && resp.StatusCode != http.StatusOK {
		a.fail(w, r, http.StatusBadGateway, "downstream answered "+resp.Status)
		return
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		a.fail(w, r, http.StatusBadGateway, "downstream answer cut short")
		return
	}
	for _, h := range relayed {
		v := resp.Header.Get(h)
		switch {
		case v == "":
		case h == degrade.HeaderDegraded:
			// Added to the reasons the gate and authentication gave.
			for _, reason := range resp.Header.Values(h) {
				degrade.AddDegradedReason(w.Header(), reason)
			}
		default:
			w.Header().Set(h, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body)
}

// drainClose reads a little of a body that is no longer needed, so the
// connection can be reused, and closes it.
func drainClose(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 4<<10))
	_ = body.Close()
}
