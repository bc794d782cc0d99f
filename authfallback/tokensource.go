package authfallback

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// Defaults of [TokenSourceConfig].
const (
	DefaultTokenExpiryMargin = 10 * time.Second
	DefaultTokenRetryBase    = time.Second
	DefaultTokenRetryMax     = time.Minute
)

// tsRefreshFraction is the part of a token's lifetime after which it is
// refreshed; tsRefreshJitter is the spread around it.
const (
	tsRefreshFraction = 0.8
	tsRefreshJitter   = 0.05
)

// ErrTokenUnavailable is returned by [TokenSource.Token] when it has no
// token that is still valid and the token endpoint fails: it never hands
// out an expired token. The returned error is a *[TokenUnavailableError].
var ErrTokenUnavailable = errors.New("authfallback: no valid token")

// TokenUnavailableError is the error of [TokenSource.Token] when no valid
// token is available. It matches ErrTokenUnavailable and unwraps to the
// error of the last refresh.
type TokenUnavailableError struct {
	// Err is the error of the last refresh.
	Err error
	// FailingSince is when refreshes started failing.
	FailingSince time.Time
	// RetryAt is when the next refresh is scheduled.
	RetryAt time.Time
}

func (e *TokenUnavailableError) Error() string {
	return fmt.Sprintf("%v (token endpoint failing since %s): %v", ErrTokenUnavailable, e.FailingSince.Format(time.RFC3339), e.Err)
}

// Is reports whether target is ErrTokenUnavailable.
func (e *TokenUnavailableError) Is(target error) bool { return target == ErrTokenUnavailable }

// Unwrap returns the error of the last refresh.
func (e *TokenUnavailableError) Unwrap() error { return e.Err }

// TokenSourceConfig configures a [TokenSource]. NewTokenSource copies it.
type TokenSourceConfig struct {
	// Base fetches tokens from the token endpoint. Required. It should fetch
	// a new token on every call, e.g. an oauth2.TokenSource that calls
	// clientcredentials.Config.Token: a caching source such as
	// oauth2.ReuseTokenSource returns its current token until shortly
	// before expiry, which defers the early refresh to that point.
	Base oauth2.TokenSource
	// ExpiryMargin is how long before its expiry a token stops being
	// handed out, so it does not expire in flight. If zero, 10 seconds.
	ExpiryMargin time.Duration
	// RetryBase is the first delay after a failed refresh; it doubles with
	// each failure, with jitter, up to RetryMax. If zero, 1 second.
	RetryBase time.Duration
	// RetryMax caps the delay between two refreshes while the token
	// endpoint fails. If zero, 1 minute.
	RetryMax time.Duration
	// Logger receives refresh failures. If nil, nothing is logged.
	Logger *slog.Logger

	// OnRefresh is called after each successful refresh. Hooks may be nil,
	// may be called concurrently, are called without any lock held, and
	// must not block.
	OnRefresh func(TokenRefreshEvent)
	// OnRefreshError is called after each failed refresh.
	OnRefreshError func(TokenRefreshErrorEvent)
}

// TokenRefreshEvent describes a successful refresh.
type TokenRefreshEvent struct {
	// Expiry is the new token's expiry, zero if it does not expire.
	Expiry time.Time
	// NextRefresh is when the next refresh is scheduled.
	NextRefresh time.Time
	// Recovered is true when earlier refreshes had failed.
	Recovered bool
	// Latency is how long the call to Base took.
	Latency time.Duration
}

// TokenRefreshErrorEvent describes a failed refresh.
type TokenRefreshErrorEvent struct {
	// Err is the error of the token endpoint.
	Err error
	// Attempt counts consecutive failures, from 1.
	Attempt int
	// Retry is the delay before the next attempt.
	Retry time.Duration
	// ValidUntil is until when the current token is still handed out; zero
	// if there is no valid token: Token fails.
	ValidUntil time.Time
	// Latency is how long the failed call to Base took.
	Latency time.Duration
}

// TokenSourceStatus is a snapshot of a TokenSource's state.
type TokenSourceStatus struct {
	// ValidUntil is until when the current token is handed out (its expiry
	// less ExpiryMargin); zero if there is no token. A token without expiry
	// is valid forever: ValidUntil is zero and Valid is true.
	ValidUntil time.Time
	// Valid is true when Token would return a token now without a fetch.
	Valid bool
	// LastRefresh is when a token was last obtained.
	LastRefresh time.Time
	// NextRefresh is when the next background refresh is scheduled.
	NextRefresh time.Time
	// LastError is the error of the last refresh, nil if it succeeded.
	LastError error
	// FailingSince is when refreshes started failing, zero if the last one
	// succeeded.
	FailingSince time.Time
	// Failures counts consecutive failed refreshes.
	Failures int
	// Refreshes counts successful refreshes.
	Refreshes int
}

// TokenSource is an oauth2.TokenSource that outlives an outage of the token
// endpoint. It refreshes its token in the background at about 80 % of the
// token's lifetime (with jitter, so a fleet of clients does not refresh in
// step). When the token endpoint fails, it keeps handing out the current
// token until ExpiryMargin before it expires, and retries with jittered
// exponential backoff. It never hands out an expired token: Token then
// fails with a *[TokenUnavailableError] (errors.Is ErrTokenUnavailable),
// without calling the endpoint more often than the backoff allows.
//
// A TokenSource is safe for concurrent use. Close stops its refresh
// goroutine; the Token it returns is shared, treat it as read-only.
type TokenSource struct {
	cfg TokenSourceConfig
	log *slog.Logger

	fetchMu sync.Mutex // serializes calls to cfg.Base

	mu    sync.Mutex // guards the fields below
	tok   *oauth2.Token
	stat  TokenSourceStatus
	close chan struct{}
	wake  chan struct{}
	done  chan struct{}
	once  sync.Once
}

var _ oauth2.TokenSource = (*TokenSource)(nil)

// NewTokenSource returns a TokenSource that starts fetching the first token
// in the background at once. It panics if cfg.Base is nil. Call Close to
// stop it.
func NewTokenSource(cfg TokenSourceConfig) *TokenSource {
	if cfg.Base == nil {
		panic("authfallback: NewTokenSource: nil Base")
	}
	s := &TokenSource{
		cfg:   cfg,
		log:   cfg.Logger,
		close: make(chan struct{}),
		wake:  make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.stat.NextRefresh = time.Now()
	go s.loop()
	return s
}

func (s *TokenSource) margin() time.Duration {
	if s.cfg.ExpiryMargin > 0 {
		return s.cfg.ExpiryMargin
	}
	return DefaultTokenExpiryMargin
}

func (s *TokenSource) retryDelay(attempt int) time.Duration {
	base, max := s.cfg.RetryBase, s.cfg.RetryMax
	if base <= 0 {
		base = DefaultTokenRetryBase
	}
	if max <= 0 {
		max = DefaultTokenRetryMax
	}
	if base > max {
		base = max
	}
	return revBackoff(attempt, base, max)
}

// tsValid reports whether tok may be handed out at now.
func (s *TokenSource) tsValid(tok *oauth2.Token, now time.Time) bool {
	if tok == nil || tok.AccessToken == "" {
		return false
	}
	return tok.Expiry.IsZero() || now.Before(tok.Expiry.Add(-s.margin()))
}

// Token returns the current token if it is still valid. Otherwise it
// fetches one, unless a refresh failed and the backoff delay has not
// passed yet; if no valid token can be had it returns a
// *TokenUnavailableError. Token implements oauth2.TokenSource.
func (s *TokenSource) Token() (*oauth2.Token, error) {
	s.mu.Lock()
	tok := s.tok
	if s.tsValid(tok, time.Now()) {
		s.mu.Unlock()
		return tok, nil
	}
	s.mu.Unlock()
	select {
	case <-s.close:
		return nil, &TokenUnavailableError{Err: errors.New("authfallback: TokenSource closed"), FailingSince: time.Now()}
	default:
	}

	s.fetchMu.Lock()
	defer s.fetchMu.Unlock()
	now := time.Now()
	s.mu.Lock()
	tok = s.tok
	if s.tsValid(tok, now) { // another caller fetched meanwhile
		s.mu.Unlock()
		return tok, nil
	}
	if s.stat.LastError != nil && now.Before(s.stat.NextRefresh) {
		err := &TokenUnavailableError{Err: s.stat.LastError, FailingSince: s.stat.FailingSince, RetryAt: s.stat.NextRefresh}
		s.mu.Unlock()
		return nil, err
	}
	s.mu.Unlock()
	tok, err := s.fetchLocked()
	if err != nil {
		s.mu.Lock()
		e := &TokenUnavailableError{Err: err, FailingSince: s.stat.FailingSince, RetryAt: s.stat.NextRefresh}
		s.mu.Unlock()
		return nil, e
	}
	return tok, nil
}

// Status returns the current state of s.
func (s *TokenSource) Status() TokenSourceStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stat
	st.Valid = s.tsValid(s.tok, time.Now())
	return st
}

// Close stops the background refresh and waits for the goroutine, which
// may be finishing a call to Base (oauth2.TokenSource cannot be
// cancelled). Token keeps returning the current token while it is valid,
// then fails. Close is safe to call more than once.
func (s *TokenSource) Close() error {
	s.once.Do(func() { close(s.close) })
	<-s.done
	return nil
}

func (s *TokenSource) loop() {
	defer close(s.done)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-s.close:
			return
		case <-s.wake:
		case <-t.C:
			s.fetchMu.Lock()
			s.mu.Lock()
			due := !time.Now().Before(s.stat.NextRefresh)
			s.mu.Unlock()
			if due { // else Token fetched meanwhile and rescheduled
				_, _ = s.fetchLocked()
			}
			s.fetchMu.Unlock()
		}
		s.mu.Lock()
		next := s.stat.NextRefresh
		s.mu.Unlock()
		if next.IsZero() { // a token without expiry: nothing to refresh
			t.Stop()
		} else {
			t.Reset(time.Until(next))
		}
	}
}

// fetchLocked calls Base and records the outcome; s.fetchMu is held.
func (s *TokenSource) fetchLocked() (*oauth2.Token, error) {
	began := time.Now()
	tok, err := s.cfg.Base.Token()
	now := time.Now()
	latency := now.Sub(began)
	if err == nil && !s.tsValid(tok, now) {
		err = errors.New("authfallback: token endpoint returned an empty or already expired token")
	}
	s.mu.Lock()
	if err != nil {
		s.stat.Failures++
		s.stat.LastError = err
		if s.stat.FailingSince.IsZero() {
			s.stat.FailingSince = now
		}
		ev := TokenRefreshErrorEvent{Err: err, Attempt: s.stat.Failures, Retry: s.retryDelay(s.stat.Failures), Latency: latency}
		if s.tsValid(s.tok, now) && !s.tok.Expiry.IsZero() {
			ev.ValidUntil = s.tok.Expiry.Add(-s.margin())
		}
		s.stat.NextRefresh = now.Add(ev.Retry)
		s.mu.Unlock()
		s.log.Warn("authfallback: token refresh failed", "attempt", ev.Attempt, "retry", ev.Retry, "valid_until", ev.ValidUntil, "err", err)
		if h := s.cfg.OnRefreshError; h != nil {
			h(ev)
		}
		s.tsWake()
		return nil, err
	}
	recovered := s.stat.Failures > 0
	// A caching Base (oauth2.ReuseTokenSource) may return the token we
	// already hold: not a refresh; try again a little later.
	same := s.tok != nil && s.tok.AccessToken == tok.AccessToken
	s.tok = tok
	s.stat.LastError = nil
	s.stat.FailingSince = time.Time{}
	s.stat.Failures = 0
	if !same {
		s.stat.LastRefresh = now
		s.stat.Refreshes++
	}
	if tok.Expiry.IsZero() {
		s.stat.ValidUntil = time.Time{}
		s.stat.NextRefresh = time.Time{}
	} else {
		s.stat.ValidUntil = tok.Expiry.Add(-s.margin())
		life := tok.Expiry.Sub(now)
		f := tsRefreshFraction + tsRefreshJitter*(2*rand.Float64()-1)
		next := now.Add(time.Duration(float64(life) * f))
		if next.After(s.stat.ValidUntil) {
			next = s.stat.ValidUntil
		}
		if later := now.Add(s.retryDelay(1)); same && next.Before(later) {
			next = later
		}
		s.stat.NextRefresh = next
	}
	ev := TokenRefreshEvent{Expiry: tok.Expiry, NextRefresh: s.stat.NextRefresh, Recovered: recovered, Latency: latency}
	s.mu.Unlock()
	if h := s.cfg.OnRefresh; h != nil {
		h(ev)
	}
	s.tsWake()
	return tok, nil
}

// tsWake makes the loop re-read the schedule.
func (s *TokenSource) tsWake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Transport returns a RoundTripper that adds "Authorization: Bearer" with
// the token of s to every request, like oauth2.Transport, and passes it to
// base (if nil, http.DefaultTransport). The request is cloned, never
// modified; when no token is available the request body is closed and the
// error of Token is returned.
func (s *TokenSource) Transport(base http.RoundTripper) http.RoundTripper {
	return &tsTransport{src: s, base: base}
}

type tsTransport struct {
	src  *TokenSource
	base http.RoundTripper
}

var _ http.RoundTripper = (*tsTransport)(nil)

func (t *tsTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	tok, err := t.src.Token()
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	r2 := req.Clone(req.Context())
	tok.SetAuthHeader(r2)
	base := t.base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(r2)
}

// TokenSourceFunc adapts a function to an oauth2.TokenSource, e.g. to fetch
// a new token on every call for [TokenSourceConfig.Base]:
//
//	Base: authfallback.TokenSourceFunc(func() (*oauth2.Token, error) {
//		return cc.Token(ctx) // cc is a *clientcredentials.Config
//	}),
type TokenSourceFunc func() (*oauth2.Token, error)

// Token calls f.
func (f TokenSourceFunc) Token() (*oauth2.Token, error) { return f() }
