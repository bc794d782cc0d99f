package fault

import (
	"net"
	"net/http"

	"github.com/holdfast-go/holdfast/internal/problem"
)

// Handler returns a handler that applies the fault in force for dependency
// to each request before next sees it, and passes the rest to next. Put it
// in front of a dependency (or of a proxy to one) to make it fail as it
// would in an outage.
func (in *Injector) Handler(dependency string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, ok := in.pick(dependency, SideServer, r)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		if wait(r.Context(), f.Latency) != nil {
			abort(w, false) // the caller went away
			return
		}
		switch f.Kind {
		case Latency:
			next.ServeHTTP(w, r)
		case Status:
			problem.Render(in.cfg.WriteProblem, w, r, Problem{
				Type: ProblemInjected, Title: "Injected fault", Status: f.status(),
				RetryAfter: f.RetryAfter, Instance: r.URL.Path,
			})
		case Error:
			abort(w, false)
		case Outage:
			abort(w, true)
		case Hang:
			next.ServeHTTP(&discardWriter{h: http.Header{}}, r)
			_ = wait(r.Context(), maxHang(f))
			abort(w, false)
		}
	})
}

// Middleware returns Handler for dependency as a middleware, for routers'
// Use methods.
func (in *Injector) Middleware(dependency string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler { return in.Handler(dependency, next) }
}

// abort ends the request without an answer: it closes the connection (with
// a reset when reset is set and the connection is TCP). When the connection
// cannot be hijacked (HTTP/2), it panics with http.ErrAbortHandler, which
// makes the server abort the stream without logging.
func abort(w http.ResponseWriter, reset bool) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok && reset {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// discardWriter is where a Hang's answer goes.
type discardWriter struct {
	h    http.Header
	code int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(code int)        { d.code = code }
