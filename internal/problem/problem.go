// Package problem writes RFC 9457 problem details (application/problem+json)
// with the headers that belong beside them. Every error response that holdfast
// itself writes goes through [Write].
package problem

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// ContentType is the media type of a problem details document (RFC 9457 §3).
const ContentType = "application/problem+json"

// TypeBase prefixes every problem type URI holdfast writes. Type URIs are
// stable identifiers; they are not required to resolve.
const TypeBase = "https://holdfast-go.github.io/problems/"

// Problem is an RFC 9457 problem details object plus the response headers
// that go with it.
type Problem struct {
	// Type is a URI reference that identifies the problem type. A bare slug
	// such as "circuit-open" is prefixed with TypeBase. If empty,
	// "about:blank" is written.
	Type string
	// Title is a short, human-readable summary of the problem type. If empty,
	// the status text of Status is used.
	Title string
	// Status is the HTTP status code. If zero, 500.
	Status int
	// Detail explains this occurrence. It must not carry secrets (tokens,
	// keys, stored bodies).
	Detail string
	// Instance identifies this occurrence, e.g. the request path.
	Instance string
	// Extensions are extra members. Keys that collide with the standard
	// members are ignored.
	Extensions map[string]any

	// RetryAfter, if positive, is written as a Retry-After header in whole
	// seconds, rounded up.
	RetryAfter time.Duration
	// WWWAuthenticate, if set, is written as the WWW-Authenticate header
	// (RFC 9110 §11.6.1, RFC 6750 §3).
	WWWAuthenticate string
}

// TypeURI returns the full type URI for a slug: TypeBase + slug.
func TypeURI(slug string) string { return TypeBase + slug }

// Write writes p to w: status, Content-Type, Cache-Control: no-store,
// X-Content-Type-Options: nosniff, Retry-After and WWW-Authenticate when set,
// then the JSON body. Headers already set on w (e.g. Holdfast-Degraded) are
// kept; Content-Length, ETag and Last-Modified are removed.
func Write(w http.ResponseWriter, p Problem) {
	status := p.Status
	if status == 0 {
		status = http.StatusInternalServerError
	}
	h := w.Header()
	h.Del("Content-Length")
	h.Del("ETag")
	h.Del("Last-Modified")
	h.Set("Content-Type", ContentType)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if p.RetryAfter > 0 {
		h.Set("Retry-After", RetryAfterValue(p.RetryAfter))
	}
	if p.WWWAuthenticate != "" {
		h.Set("WWW-Authenticate", p.WWWAuthenticate)
	}
	w.WriteHeader(status)
	_, _ = w.Write(p.body(status))
}

// RetryAfterValue formats d as Retry-After delta-seconds, rounded up, at least 1.
func RetryAfterValue(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return strconv.FormatInt(s, 10)
}

func (p Problem) body(status int) []byte {
	m := make(map[string]any, len(p.Extensions)+5)
	for k, v := range p.Extensions {
		m[k] = v
	}
	typ := p.Type
	switch {
	case typ == "":
		typ = "about:blank"
	case !hasScheme(typ):
		typ = TypeBase + typ
	}
	title := p.Title
	if title == "" {
		title = http.StatusText(status)
	}
	m["type"] = typ
	m["title"] = title
	m["status"] = status
	delete(m, "detail")
	delete(m, "instance")
	if p.Detail != "" {
		m["detail"] = p.Detail
	}
	if p.Instance != "" {
		m["instance"] = p.Instance
	}
	b, err := json.Marshal(m)
	if err != nil {
		// An extension that cannot be encoded: write the standard members only.
		b, _ = json.Marshal(map[string]any{"type": typ, "title": title, "status": status})
	}
	return append(b, '\n')
}

func hasScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ':':
			return i > 0
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return false
}

// Func is the type of every package's WriteProblem hook: it writes the
// error response that the package decided on, described by p (status,
// problem type, detail, Retry-After, WWW-Authenticate). Packages expose it
// as a field of type func(http.ResponseWriter, *http.Request, Problem),
// with Problem an alias of this package's type, so one function serves them
// all.
type Func = func(w http.ResponseWriter, r *http.Request, p Problem)

// Render writes p through f, or with [Write] when f is nil.
func Render(f Func, w http.ResponseWriter, r *http.Request, p Problem) {
	if f != nil {
		f(w, r, p)
		return
	}
	Write(w, p)
}
