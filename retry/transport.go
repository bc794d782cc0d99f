package retry

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/holdfast-go/holdfast/internal/httpx"
)

// Defaults used when the corresponding Transport field is zero.
const (
	DefaultMaxAttempts = 3
	DefaultBaseDelay   = 100 * time.Millisecond
	DefaultMaxDelay    = 2 * time.Second
	DefaultDeadline    = 10 * time.Second
)

// Transport is an http.RoundTripper that retries a failed request when, and
// only when, repeating it is safe. See the package documentation for the
// rules. Its zero value is usable: 3 attempts, full-jitter backoff from
// 100 ms capped at 2 s, a 10 s deadline and a retry budget of its own.
//
// A Transport is safe for concurrent use once its fields are set; do not
// change them while it is in use. Do not copy a Transport after first use.
type Transport struct {
	// Base sends each attempt. If nil, http.DefaultTransport is used.
	Base http.RoundTripper

	// MaxAttempts is the number of attempts, the first one included.
	// If zero, 3. If negative, 1 (no retries).
	MaxAttempts int

	// BaseDelay is the backoff before the first retry; it doubles for each
	// further retry, up to MaxDelay. The wait is drawn uniformly from
	// [0, min(MaxDelay, BaseDelay*2^n)] ("full jitter").
	// If zero, 100 ms.
	BaseDelay time.Duration

	// MaxDelay caps the backoff. It does not cap a server's Retry-After.
	// If zero, 2 s.
	MaxDelay time.Duration

	// DisableJitter makes the backoff exactly min(MaxDelay, BaseDelay*2^n).
	// Leave it false in production: without jitter, clients that failed
	// together retry together.
	DisableJitter bool

	// MaxRetryAfter is the longest Retry-After (on 429 and 503) the
	// transport waits for. A longer one, or one that would end after the
	// deadline, makes the transport return the response at once, so the
	// caller can pass the instruction on. If zero, what is left of the
	// deadline.
	MaxRetryAfter time.Duration

	// Deadline bounds the retrying: no wait begins, and no retry starts,
	// that would end more than Deadline after RoundTrip was called or after
	// the request context's deadline; the transport returns the last
	// response or error at once instead. It does not cut an attempt short
	// (use AttemptTimeout, http.Client.Timeout or the request context), so
	// the first attempt costs nothing extra; with AttemptTimeout set, no
	// attempt runs past the deadline either. If zero, 10 s. If negative,
	// only the request context bounds the retrying.
	Deadline time.Duration

	// AttemptTimeout, if positive, bounds each attempt, including the
	// reading of the body of the response that is returned: it ends when
	// that body is closed. An attempt that times out is retried. If zero,
	// attempts are not bounded by the transport.
	AttemptTimeout time.Duration

	// Retryable, if not nil, decides which failures of a replayable request
	// are retried, in place of [DefaultRetryable]: resp is the response (nil
	// after an error), err the error of the attempt. It is never asked once
	// the request's context is done, and it cannot make a request that may
	// not be repeated (see RetryIdempotent) retried: such a failure ends
	// with OnGiveUp. A response it accepts is discarded, so it must not read
	// resp.Body. Use it, for instance, to retry 500 from an
	// upstream known to fail transiently, or not to retry 429 from one whose
	// quota resets daily. It may call DefaultRetryable.
	Retryable func(resp *http.Response, err error) bool

	// RetryIdempotent also retries PUT and DELETE without an
	// Idempotency-Key. Safe methods (GET, HEAD, OPTIONS, TRACE) and requests
	// with an Idempotency-Key header are always retried; others never.
	RetryIdempotent bool

	// MaxBufferedBody, if positive, lets the transport buffer a request
	// body that has no GetBody, up to this many bytes, so the request can be
	// retried. A longer body is sent once, not retried. If zero, such a
	// request is sent once and not retried.
	MaxBufferedBody int64

	// Budget bounds retries across requests. Share one between transports
	// that talk to the same upstream. If nil, the transport uses a budget of
	// its own with the defaults (see NewBudget), so that even the zero
	// Transport cannot multiply the load of an outage.
	Budget *Budget

	// OnRetry, if not nil, is called before each retry, before its wait.
	// OnGiveUp, if not nil, is called when an attempt failed in a way that
	// is retried but the transport stops: budget spent (ErrBudgetExhausted),
	// attempts used up, deadline, or request not replayable. They may be
	// called concurrently and must not block.
	OnRetry  func(RetryEvent)
	OnGiveUp func(GiveUpEvent)

	// Logger, if not nil, receives a debug record for each retry and each
	// give-up, with the method and host (never the full URL, which may
	// carry secrets).
	Logger *slog.Logger

	ownBudget atomic.Pointer[Budget]
}

var _ http.RoundTripper = (*Transport)(nil)

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return http.DefaultTransport
}

func (t *Transport) maxAttempts() int {
	switch {
	case t.MaxAttempts == 0:
		return DefaultMaxAttempts
	case t.MaxAttempts < 0:
		return 1
	}
	return t.MaxAttempts
}

func (t *Transport) baseDelay() time.Duration {
	if t.BaseDelay > 0 {
		return t.BaseDelay
	}
	return DefaultBaseDelay
}

func (t *Transport) maxDelay() time.Duration {
	if t.MaxDelay > 0 {
		return t.MaxDelay
	}
	return DefaultMaxDelay
}

func (t *Transport) deadline() time.Duration {
	if t.Deadline == 0 {
		return DefaultDeadline
	}
	return t.Deadline
}

// budget returns t.Budget or the transport's own, created once.
func (t *Transport) budget() *Budget {
	if t.Budget != nil {
		return t.Budget
	}
	if b := t.ownBudget.Load(); b != nil {
		return b
	}
	t.ownBudget.CompareAndSwap(nil, NewBudget(DefaultBudgetRatio, DefaultBudgetMinPerSecond, DefaultBudgetWindow))
	return t.ownBudget.Load()
}

// RoundTrip sends req and retries it as the package documentation
// describes. It does not modify req, always closes its body, and returns a
// nil error whenever a response is returned. Discarded responses are
// drained (up to a bound) and closed.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	budget := t.budget()
	start := budget.deposit()

	attempts := t.maxAttempts()
	if req.URL == nil {
		attempts = 1 // the base reports the malformed request; nothing to retry
	}
	var notReplayable error
	var buffered []byte
	first := req
	if attempts > 1 {
		notReplayable = t.checkReplayable(req)
		if nr, ok := notReplayable.(*NotReplayableError); ok && nr.Reason == reasonBody && t.MaxBufferedBody > 0 {
			first, buffered, notReplayable = t.buffer(req)
		}
	}

	resp, err := t.send(req.Context(), first, start)
	if !t.retryable(req.Context(), resp, err) {
		return resp, err
	}
	return t.retry(req, start, budget, attempts, notReplayable, buffered, resp, err)
}

const (
	reasonMethod = "method without Idempotency-Key"
	reasonBody   = "body without GetBody"
	reasonLarge  = "body larger than MaxBufferedBody"
)

// checkReplayable returns nil or a *NotReplayableError.
func (t *Transport) checkReplayable(req *http.Request) error {
	if !httpx.IsSafe(req.Method) && strings.TrimSpace(firstValue(req.Header[httpx.HeaderIdempotencyKey])) == "" &&
		!(t.RetryIdempotent && httpx.IsIdempotent(req.Method)) {
		return &NotReplayableError{Method: req.Method, Reason: reasonMethod}
	}
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return &NotReplayableError{Method: req.Method, Reason: reasonBody}
	}
	return nil
}

// firstValue is Header.Get for a canonical key, without canonicalizing it
// again on every request.
func firstValue(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// buffer reads req's body up to MaxBufferedBody. It returns the request to
// send first and, if the body fit, the bytes to replay.
func (t *Transport) buffer(req *http.Request) (*http.Request, []byte, error) {
	data, err := io.ReadAll(io.LimitReader(req.Body, t.MaxBufferedBody+1))
	r := req.Clone(req.Context())
	if err != nil {
		// Send what was read followed by the error, once; the base
		// transport reports the failure.
		r.Body = readCloser{io.MultiReader(bytes.NewReader(data), errReader{err}), req.Body}
		return r, nil, &NotReplayableError{Method: req.Method, Reason: "reading body", Err: err}
	}
	if int64(len(data)) > t.MaxBufferedBody {
		r.Body = readCloser{io.MultiReader(bytes.NewReader(data), req.Body), req.Body}
		return r, nil, &NotReplayableError{Method: req.Method, Reason: reasonLarge}
	}
	_ = req.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(data))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
	return r, data, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// send makes one attempt. If AttemptTimeout is set, the attempt ends after
// it or at the deadline of the request that started at start, whichever
// comes first.
func (t *Transport) send(ctx context.Context, r *http.Request, start time.Time) (*http.Response, error) {
	if t.AttemptTimeout <= 0 {
		resp, err := t.base().RoundTrip(r)
		return checkResult(resp, err)
	}
	end := time.Now().Add(t.AttemptTimeout)
	if d := t.deadline(); d > 0 && start.Add(d).Before(end) {
		end = start.Add(d)
	}
	actx, cancel := context.WithDeadline(ctx, end)
	resp, err := t.base().RoundTrip(r.WithContext(actx))
	resp, err = checkResult(resp, err)
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = httpx.CancelOnClose(resp.Body, cancel)
	return resp, nil
}

var errNilResponse = errors.New("retry: base RoundTripper returned a nil response and a nil error")

// checkResult enforces the RoundTripper contract on the base's result.
func checkResult(resp *http.Response, err error) (*http.Response, error) {
	if err != nil {
		if resp != nil {
			httpx.DrainClose(resp.Body)
		}
		return nil, err
	}
	if resp == nil {
		return nil, errNilResponse
	}
	if resp.Body == nil {
		resp.Body = http.NoBody
	}
	return resp, nil
}

// retryable reports whether a failure is one that is retried; ctx is the
// caller's context. Once it is done, nothing is: the response is the
// caller's to see, not ours to discard.
func (t *Transport) retryable(ctx context.Context, resp *http.Response, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if t.Retryable != nil {
		return t.Retryable(resp, err)
	}
	return DefaultRetryable(resp, err)
}

// DefaultRetryable is the classification a Transport uses when its
// Retryable is nil: the statuses 429, 502, 503 and 504, and errors other
// than a cancellation, an open circuit breaker (breaker.ErrOpen), a name
// that does not exist, and TLS and certificate errors (asking again will
// not change them). resp is nil when err is not.
func DefaultRetryable(resp *http.Response, err error) bool {
	if err == nil {
		if resp == nil {
			return false
		}
		switch resp.StatusCode {
		case http.StatusTooManyRequests, http.StatusBadGateway,
			http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	}
	if errors.Is(err, context.Canceled) ||
		errors.Is(err, httpx.ErrCircuitOpen) || errors.Is(err, http.ErrSchemeMismatch) ||
		errors.Is(err, errNilResponse) {
		return false
	}
	if dnsErr := (*net.DNSError)(nil); errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return false // the name does not exist; asking again will not create it
	}
	var (
		certErr     *tls.CertificateVerificationError
		recordErr   tls.RecordHeaderError
		alertErr    tls.AlertError
		authority   x509.UnknownAuthorityError
		invalid     x509.CertificateInvalidError
		hostname    x509.HostnameError
		constraint  x509.ConstraintViolationError
		unhandled   x509.UnhandledCriticalExtension
		systemRoots x509.SystemRootsError
	)
	if errors.As(err, &certErr) || errors.As(err, &recordErr) || errors.As(err, &alertErr) ||
		errors.As(err, &authority) || errors.As(err, &invalid) || errors.As(err, &hostname) ||
		errors.As(err, &constraint) || errors.As(err, &unhandled) || errors.As(err, &systemRoots) {
		return false
	}
	return true
}

// retry runs the attempts after the first; resp or err is the result of
// the first, which is retryable.
func (t *Transport) retry(req *http.Request, start time.Time, budget *Budget, maxAttempts int,
	notReplayable error, buffered []byte, resp *http.Response, err error) (*http.Response, error) {
	ctx := req.Context()
	end, hasEnd := start.Add(t.deadline()), t.deadline() > 0
	if d, ok := ctx.Deadline(); ok && (!hasEnd || d.Before(end)) {
		end, hasEnd = d, true
	}
	for attempt := 1; ; attempt++ {
		reason := notReplayable
		if reason == nil && attempt >= maxAttempts {
			reason = ErrMaxAttempts
		}
		var delay time.Duration
		if reason == nil {
			delay, reason = t.delay(attempt, resp, end, hasEnd)
		}
		if reason == nil && !budget.withdraw() {
			reason = ErrBudgetExhausted
		}
		var body io.ReadCloser
		if reason == nil {
			body, reason = rewind(req, buffered)
		}
		if reason != nil {
			return t.giveUp(req, attempt, reason, resp, err)
		}

		ev := RetryEvent{Request: req, Attempt: attempt + 1, Delay: delay, Err: err}
		if resp != nil {
			ev.StatusCode = resp.StatusCode
			httpx.DrainClose(resp.Body)
		}
		if t.OnRetry != nil {
			t.OnRetry(ev)
		}
		if t.Logger != nil {
			t.Logger.LogAttrs(ctx, slog.LevelDebug, "retry", slog.String("method", req.Method),
				slog.String("host", host(req)), slog.Int("attempt", ev.Attempt),
				slog.Duration("delay", delay), slog.Int("status", ev.StatusCode), slog.Any("error", err))
		}
		if werr := wait(ctx, delay); werr != nil {
			if body != nil {
				_ = body.Close()
			}
			return nil, werr
		}
		r := req.Clone(ctx)
		r.Body = body
		resp, err = t.send(ctx, r, start)
		if !t.retryable(ctx, resp, err) {
			return resp, err
		}
	}
}

// delay returns the wait before retry number attempt (1 for the first), or
// ErrDeadline.
func (t *Transport) delay(attempt int, resp *http.Response, end time.Time, hasEnd bool) (time.Duration, error) {
	backoff := t.maxDelay()
	if n := attempt - 1; n < 62 && t.baseDelay() <= backoff>>n {
		backoff = t.baseDelay() << n
	}
	d := backoff
	if !t.DisableJitter {
		d = jitter(backoff)
	}
	now := time.Now()
	left := time.Duration(1<<63 - 1)
	if hasEnd {
		left = end.Sub(now)
	}
	if resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		if v := resp.Header.Get("Retry-After"); v != "" {
			limit := t.MaxRetryAfter
			if limit <= 0 || limit > left {
				limit = max(left, 0)
			}
			ra, capped, ok := httpx.ParseRetryAfter(v, now, max(limit, 1))
			if ok {
				if capped || ra >= left {
					return 0, ErrDeadline
				}
				// The server's wait is a lower bound; the jitter goes on top
				// so that clients told the same instant do not return together.
				if d > left-ra {
					d = 0
				}
				d += ra
			}
		}
	}
	if d >= left {
		return 0, ErrDeadline
	}
	return d, nil
}

// rewind returns the body for a new attempt.
func rewind(req *http.Request, buffered []byte) (io.ReadCloser, error) {
	if buffered != nil {
		return io.NopCloser(bytes.NewReader(buffered)), nil
	}
	if req.Body == nil || req.Body == http.NoBody {
		return req.Body, nil
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, &NotReplayableError{Method: req.Method, Reason: "GetBody failed", Err: err}
	}
	if body == nil {
		return nil, &NotReplayableError{Method: req.Method, Reason: "GetBody returned no body"}
	}
	return body, nil
}

func (t *Transport) giveUp(req *http.Request, attempts int, reason error, resp *http.Response, err error) (*http.Response, error) {
	ev := GiveUpEvent{Request: req, Attempts: attempts, Reason: reason, Err: err}
	if resp != nil {
		ev.StatusCode = resp.StatusCode
	}
	if t.OnGiveUp != nil {
		t.OnGiveUp(ev)
	}
	if t.Logger != nil {
		t.Logger.LogAttrs(req.Context(), slog.LevelDebug, "retry: giving up", slog.String("method", req.Method),
			slog.String("host", host(req)), slog.Int("attempts", attempts),
			slog.Any("reason", reason), slog.Int("status", ev.StatusCode), slog.Any("error", err))
	}
	if err != nil {
		return nil, &Error{Attempts: attempts, Reason: reason, Err: err}
	}
	return resp, nil
}

// wait sleeps for d or until ctx is done.
func wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return context.Cause(ctx)
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func host(req *http.Request) string {
	if req.URL == nil {
		return ""
	}
	return req.URL.Host
}

// jitter returns a uniformly random duration in [0, d].
func jitter(d time.Duration) time.Duration {
	switch {
	case d <= 0:
		return 0
	case d == 1<<63-1:
		return rand.N(d)
	}
	return rand.N(d + 1)
}
