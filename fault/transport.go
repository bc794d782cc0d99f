package fault

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/holdfast-go/holdfast/internal/problem"
)

// injectedError is a client-side fault's error: it matches ErrInjected and
// unwraps to the error it imitates.
type injectedError struct {
	dep  string
	kind Kind
	err  error
}

func (e *injectedError) Error() string {
	return "fault: injected " + string(e.kind) + " for " + e.dep + ": " + e.err.Error()
}
func (e *injectedError) Unwrap() error        { return e.err }
func (e *injectedError) Is(target error) bool { return target == ErrInjected }

// Transport returns an http.RoundTripper that applies the fault in force
// for dependency to each request, and sends the rest with base. If base is
// nil, http.DefaultTransport is used. It honours the RoundTripper contract:
// the request is not modified, its body is closed when it is not sent, and
// an error is returned only when no response arrived.
func (in *Injector) Transport(dependency string, base http.RoundTripper) http.RoundTripper {
	return &transport{in: in, dep: dependency, base: base}
}

type transport struct {
	in   *Injector
	dep  string
	base http.RoundTripper
}

var _ http.RoundTripper = (*transport)(nil)

func (t *transport) next() http.RoundTripper {
	if t.base != nil {
		return t.base
	}
	return http.DefaultTransport
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	f, ok := t.in.pick(t.dep, SideClient, req)
	if !ok {
		return t.next().RoundTrip(req)
	}
	closeBody := func() {
		if req.Body != nil {
			_ = req.Body.Close()
		}
	}
	ctx := req.Context()
	if err := wait(ctx, f.Latency); err != nil {
		closeBody()
		return nil, err
	}
	switch f.Kind {
	case Latency:
		return t.next().RoundTrip(req)
	case Status:
		closeBody()
		return t.in.statusResponse(req, f), nil
	case Error:
		closeBody()
		return nil, &injectedError{t.dep, f.Kind, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}}
	case Outage:
		closeBody()
		return nil, &injectedError{t.dep, f.Kind, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
	}
	// Hang: the request runs; its answer is thrown away.
	resp, err := t.next().RoundTrip(req)
	if err == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
	}
	if err := wait(ctx, maxHang(f)); err != nil {
		return nil, err
	}
	return nil, &injectedError{t.dep, f.Kind, errAnswerWithheld}
}

var errAnswerWithheld = &timeoutError{}

// timeoutError is the error of a Hang that outlasted MaxHang: a timeout,
// as net.Error says it.
type timeoutError struct{}

func (*timeoutError) Error() string   { return "answer withheld (hang)" }
func (*timeoutError) Timeout() bool   { return true }
func (*timeoutError) Temporary() bool { return true }

// maxHang is how long a Hang lasts: MaxHang, or "forever" (until the
// context ends) when zero.
func maxHang(f Fault) time.Duration {
	if f.MaxHang > 0 {
		return f.MaxHang
	}
	return -1
}

// wait waits d (forever if negative, not at all if zero), or until ctx
// ends, in which case it returns context.Cause(ctx).
func wait(ctx context.Context, d time.Duration) error {
	if d == 0 {
		return nil
	}
	var c <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		c = t.C
	}
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-c:
		return nil
	}
}

// statusResponse is the client-side answer of a Status fault.
func (in *Injector) statusResponse(req *http.Request, f Fault) *http.Response {
	status := f.status()
	h := http.Header{}
	h.Set("Content-Type", problem.ContentType)
	if f.RetryAfter > 0 {
		h.Set("Retry-After", problem.RetryAfterValue(f.RetryAfter))
	}
	body := `{"type":"` + problem.TypeURI(ProblemInjected) + `","title":"Injected fault","status":` + strconv.Itoa(status) + "}\n"
	return &http.Response{
		Status:        strconv.Itoa(status) + " " + http.StatusText(status),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}
