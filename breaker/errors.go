package breaker

import (
	"errors"
	"fmt"
	"time"

	"github.com/holdfast-go/holdfast/internal/httpx"
)

// ErrOpen is the error kind of a call refused by an open breaker. It is the
// value the retry package declines to retry. Match it with errors.Is; the
// error returned is an *OpenError.
var ErrOpen = httpx.ErrCircuitOpen

// ErrTimeout is the error kind of a call that outlasted Config.Timeout.
var ErrTimeout = errors.New("breaker: call timed out")

// OpenError is returned by Transport for a call refused by an open breaker.
// errors.Is(err, ErrOpen) reports true for it.
type OpenError struct {
	// Key is the breaker's key (the host, by default).
	Key string
	// RetryAfter is the time left until the breaker lets a trial call
	// through; zero while half-open trial calls are in flight.
	RetryAfter time.Duration
}

func (e *OpenError) Error() string {
	return fmt.Sprintf("breaker: circuit open for %q, retry after %v", e.Key, e.RetryAfter)
}

// Is reports whether target is ErrOpen.
func (e *OpenError) Is(target error) bool { return target == ErrOpen }

// Unwrap returns ErrOpen.
func (e *OpenError) Unwrap() error { return ErrOpen }

// timeoutCause marks contexts cancelled by Config.Timeout.
var timeoutCause = ErrTimeout

// ErrConcurrencyLimit is the error kind of a call refused because
// Config.MaxConcurrent calls of its key were in flight. The error returned
// is a *LimitError.
var ErrConcurrencyLimit = errors.New("breaker: concurrency limit reached")

// LimitError is returned by Transport for a call refused by
// Config.MaxConcurrent. errors.Is(err, ErrConcurrencyLimit) reports true.
type LimitError struct {
	// Key is the breaker's key (the host, by default).
	Key string
	// Limit is Config.MaxConcurrent.
	Limit int
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("breaker: %d calls to %q in flight, call refused", e.Limit, e.Key)
}

// Unwrap returns ErrConcurrencyLimit.
func (e *LimitError) Unwrap() error { return ErrConcurrencyLimit }
