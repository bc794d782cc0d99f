package retry

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Reasons the transport stopped retrying. They are the Reason of a
// [GiveUpEvent] and of an [Error]; match them with errors.Is.
var (
	// ErrMaxAttempts: the request used all of MaxAttempts.
	ErrMaxAttempts = errors.New("retry: attempts exhausted")
	// ErrBudgetExhausted: the retry [Budget] allows no more retries now.
	ErrBudgetExhausted = errors.New("retry: retry budget exhausted")
	// ErrDeadline: the next attempt, after its backoff or the server's
	// Retry-After, would start after the deadline, or Retry-After asks for a
	// longer wait than MaxRetryAfter.
	ErrDeadline = errors.New("retry: next attempt would exceed the deadline")
)

// NotReplayableError is the reason a request is not retried when its method
// is not safe to repeat or its body cannot be sent again.
type NotReplayableError struct {
	Method string
	// Reason says what is missing, e.g. "method without Idempotency-Key"
	// or "body without GetBody".
	Reason string
	// Err is the error of GetBody or of reading the body, if any.
	Err error
}

func (e *NotReplayableError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("retry: %s request not replayable: %s: %v", e.Method, e.Reason, e.Err)
	}
	return fmt.Sprintf("retry: %s request not replayable: %s", e.Method, e.Reason)
}

func (e *NotReplayableError) Unwrap() error { return e.Err }

// Error is returned by [Transport.RoundTrip] when the last attempt failed
// without a response, the error was one that is retried, and the transport
// stopped anyway. It unwraps to both the attempt's error and the reason, so
// errors.Is(err, syscall.ECONNREFUSED) and errors.Is(err, ErrBudgetExhausted)
// both work.
type Error struct {
	// Attempts is the number of attempts made.
	Attempts int
	// Reason is why no further attempt was made: ErrMaxAttempts,
	// ErrBudgetExhausted, ErrDeadline or a *NotReplayableError.
	Reason error
	// Err is the error of the last attempt.
	Err error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%v (after %d attempts; %v)", e.Err, e.Attempts, e.Reason)
}

func (e *Error) Unwrap() []error { return []error{e.Err, e.Reason} }

// RetryEvent describes a retry about to happen; see Transport.OnRetry.
type RetryEvent struct {
	// Request is the caller's request. Do not modify it.
	Request *http.Request
	// Attempt is the number of the attempt about to start: 2 for the first retry.
	Attempt int
	// Delay is the wait before it.
	Delay time.Duration
	// StatusCode is the status of the failed attempt, 0 if it failed with an error.
	StatusCode int
	// Err is the error of the failed attempt, nil if a response arrived.
	Err error
}

// GiveUpEvent describes a failed attempt that was not retried although its
// failure is one that is retried; see Transport.OnGiveUp.
type GiveUpEvent struct {
	// Request is the caller's request. Do not modify it.
	Request *http.Request
	// Attempts is the number of attempts made.
	Attempts int
	// Reason is why: ErrMaxAttempts, ErrBudgetExhausted, ErrDeadline or a
	// *NotReplayableError.
	Reason error
	// StatusCode is the status of the last attempt, 0 if it failed with an error.
	StatusCode int
	// Err is the error of the last attempt, nil if a response arrived.
	Err error
}
