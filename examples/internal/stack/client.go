package stack

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/holdfast-go/holdfast/breaker"
	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/retry"
)

// ClientConfig configures the resilient client stack of NewClient.
type ClientConfig struct {
	// Base sends the attempts. If nil, NewBaseTransport().
	Base http.RoundTripper
	// CallTimeout bounds one attempt (the breaker's timeout). If zero, 2 s.
	CallTimeout time.Duration
	// BreakerDelay is how long an open breaker waits before a trial call.
	// If zero, 30 s.
	BreakerDelay time.Duration
	// Budget bounds the retries. If nil, the retry package's default, one
	// per client.
	Budget *retry.Budget
	// OnBreaker is called on every state change of the per-host breaker.
	OnBreaker func(breaker.StateChange)
	// Hooks: OnRetry, OnGiveUp, OnStale and OnCall are used.
	Hooks  Hooks
	Logger *slog.Logger
}

// MaxIdleConnsPerHost is how many idle keep-alive connections to the
// downstream NewBaseTransport keeps.
const MaxIdleConnsPerHost = 64

// NewBaseTransport returns the transport a Service and NewClient send the
// downstream calls with when no Base is given: a clone of
// http.DefaultTransport that keeps MaxIdleConnsPerHost idle connections
// per host instead of 2, so that a service serving many requests at once
// reuses its connections to the downstream rather than dialing a new one
// for most calls (and leaving the closed ones in TIME_WAIT).
func NewBaseTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = MaxIdleConnsPerHost
	return t
}

// NewClient returns an http.Client whose transport is holdfast's client
// stack, outermost first:
//
//	idempotency.Transport  an Idempotency-Key on every POST and PATCH that has none
//	degrade.Stale          a GET that failed after its retries gets its last good response, marked stale
//	retry.Transport        retries what is safe (GETs, keyed writes), within the budget and a deadline
//	breaker.Transport      per host; open: fail fast with breaker.ErrOpen, which retry does not retry
//	base
//
// degrade.Stale sits above retry and breaker, not below: a read is retried
// before it is answered stale, and the breaker counts the host's real
// failures rather than stale answers that look like successes.
//
// It also returns the breaker, for status pages.
func NewClient(cc ClientConfig) (*http.Client, *breaker.Breaker) {
	timeout := cc.CallTimeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	base := cc.Base
	if base == nil {
		base = NewBaseTransport()
	}
	brk := breaker.New(breaker.Config{
		Timeout:       timeout,
		Delay:         cc.BreakerDelay,
		OnStateChange: cc.OnBreaker,
		OnCall:        cc.Hooks.OnCall,
		Logger:        cc.Logger,
	})
	var rt http.RoundTripper = brk.Transport(base)
	rt = &retry.Transport{
		Base:     rt,
		Budget:   cc.Budget,
		Deadline: 3 * timeout,
		OnRetry:  cc.Hooks.OnRetry,
		OnGiveUp: cc.Hooks.OnGiveUp,
		Logger:   cc.Logger,
	}
	stale := &degrade.Stale{MaxStale: time.Hour, OnStale: cc.Hooks.OnStale, Logger: cc.Logger}
	rt = stale.Transport(rt)
	rt = &idempotency.Transport{Base: rt}
	return &http.Client{Transport: rt}, brk
}
