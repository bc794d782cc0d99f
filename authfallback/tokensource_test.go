package authfallback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// tsFake is a token endpoint: each call mints a token living life, unless
// failing is set.
type tsFake struct {
	mu      sync.Mutex
	life    time.Duration
	failing bool
	calls   int
}

func (f *tsFake) Token() (*oauth2.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.failing {
		return nil, errors.New("token endpoint: 503")
	}
	tok := &oauth2.Token{AccessToken: fmt.Sprintf("tok-%d", f.calls), TokenType: "Bearer"}
	if f.life > 0 {
		tok.Expiry = time.Now().Add(f.life)
	}
	return tok, nil
}

func (f *tsFake) set(failing bool) { f.mu.Lock(); f.failing = failing; f.mu.Unlock() }
func (f *tsFake) n() int           { f.mu.Lock(); defer f.mu.Unlock(); return f.calls }

func TestTokenSourceRefreshesAhead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &tsFake{life: time.Hour}
		var refreshed atomic.Int32
		s := NewTokenSource(TokenSourceConfig{Base: f, OnRefresh: func(TokenRefreshEvent) { refreshed.Add(1) }})
		defer s.Close()
		synctest.Wait()
		require.Equal(t, 1, f.n(), "first token fetched at once, in the background")
		tok, err := s.Token()
		require.NoError(t, err)
		assert.Equal(t, "tok-1", tok.AccessToken)
		assert.Equal(t, 1, f.n(), "Token served from memory")

		// 80 % of one hour, +/- 5 %: between 45 and 51 minutes.
		time.Sleep(45*time.Minute - time.Second)
		synctest.Wait()
		assert.Equal(t, 1, f.n(), "not refreshed before 75 %%")
		time.Sleep(6*time.Minute + 2*time.Second)
		synctest.Wait()
		assert.Equal(t, 2, f.n(), "refreshed by 85 %%")
		tok, err = s.Token()
		require.NoError(t, err)
		assert.Equal(t, "tok-2", tok.AccessToken)
		st := s.Status()
		assert.Equal(t, 2, st.Refreshes)
		assert.True(t, st.Valid)
		assert.Equal(t, tok.Expiry.Add(-DefaultTokenExpiryMargin), st.ValidUntil)
		assert.Equal(t, int32(2), refreshed.Load())
	})
}

func TestTokenSourceOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &tsFake{life: 10 * time.Minute}
		var mu sync.Mutex
		var errs []TokenRefreshErrorEvent
		var recovered bool
		s := NewTokenSource(TokenSourceConfig{
			Base: f, RetryMax: 30 * time.Second,
			OnRefreshError: func(e TokenRefreshErrorEvent) { mu.Lock(); errs = append(errs, e); mu.Unlock() },
			OnRefresh:      func(e TokenRefreshEvent) { mu.Lock(); recovered = recovered || e.Recovered; mu.Unlock() },
		})
		defer s.Close()
		synctest.Wait()
		first, err := s.Token()
		require.NoError(t, err)
		f.set(true)

		// Until ExpiryMargin before expiry, the current token is handed out.
		time.Sleep(9 * time.Minute)
		synctest.Wait()
		tok, err := s.Token()
		require.NoError(t, err)
		assert.Equal(t, first.AccessToken, tok.AccessToken)
		st := s.Status()
		assert.Error(t, st.LastError)
		assert.False(t, st.FailingSince.IsZero())
		assert.Positive(t, st.Failures)
		mu.Lock()
		require.NotEmpty(t, errs)
		assert.Equal(t, first.Expiry.Add(-DefaultTokenExpiryMargin), errs[0].ValidUntil)
		for i, e := range errs {
			assert.Equal(t, i+1, e.Attempt)
			assert.LessOrEqual(t, e.Retry, 30*time.Second)
		}
		mu.Unlock()

		// Past that, never the expired token: a typed error, and no call
		// to the endpoint more often than the backoff allows.
		time.Sleep(first.Expiry.Add(-DefaultTokenExpiryMargin).Sub(time.Now()))
		synctest.Wait()
		calls := f.n()
		for range 100 {
			tok, err = s.Token()
			assert.Nil(t, tok)
			assert.ErrorIs(t, err, ErrTokenUnavailable)
		}
		var tue *TokenUnavailableError
		require.ErrorAs(t, err, &tue)
		assert.False(t, tue.FailingSince.IsZero())
		assert.Contains(t, tue.Unwrap().Error(), "503")
		assert.LessOrEqual(t, f.n(), calls+1, "Token does not hammer a failing endpoint")
		assert.False(t, s.Status().Valid)

		// Recovery: within RetryMax a new token is fetched.
		f.set(false)
		time.Sleep(31 * time.Second)
		synctest.Wait()
		tok, err = s.Token()
		require.NoError(t, err)
		assert.NotEqual(t, first.AccessToken, tok.AccessToken)
		assert.NoError(t, s.Status().LastError)
		assert.True(t, s.Status().FailingSince.IsZero())
		mu.Lock()
		assert.True(t, recovered)
		mu.Unlock()
	})
}

func TestTokenSourceNoToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &tsFake{life: time.Hour, failing: true}
		s := NewTokenSource(TokenSourceConfig{Base: f})
		defer s.Close()
		synctest.Wait()
		_, err := s.Token()
		assert.ErrorIs(t, err, ErrTokenUnavailable)
		assert.Equal(t, 1, f.n(), "the failed background fetch is not repeated at once")

		f.set(false)
		time.Sleep(2 * time.Second) // first retry: 0.5..1 s
		synctest.Wait()
		_, err = s.Token()
		assert.NoError(t, err)
	})
}

func TestTokenSourceRefusesExpiredFromEndpoint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &tsFake{life: 5 * time.Second} // shorter than the margin
		s := NewTokenSource(TokenSourceConfig{Base: f})
		defer s.Close()
		synctest.Wait()
		_, err := s.Token()
		assert.ErrorIs(t, err, ErrTokenUnavailable)
	})
}

func TestTokenSourceWithoutExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &tsFake{}
		s := NewTokenSource(TokenSourceConfig{Base: f})
		synctest.Wait()
		time.Sleep(24 * time.Hour)
		synctest.Wait()
		assert.Equal(t, 1, f.n(), "a token that does not expire is not refreshed")
		_, err := s.Token()
		assert.NoError(t, err)
		require.NoError(t, s.Close())
		require.NoError(t, s.Close())
	})
}

func TestTokenSourceCachingBase(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &tsFake{life: time.Hour}
		// ReuseTokenSource hands out its token until 10 s before expiry.
		s := NewTokenSource(TokenSourceConfig{Base: oauth2.ReuseTokenSource(nil, f)})
		defer s.Close()
		time.Sleep(90 * time.Minute)
		synctest.Wait()
		assert.Equal(t, 2, f.n(), "one real fetch per lifetime")
		assert.Equal(t, 2, s.Status().Refreshes, "the same token again is not a refresh")
		_, err := s.Token()
		assert.NoError(t, err)
	})
}

func TestTokenSourceTransport(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &tsFake{life: time.Hour}
		s := NewTokenSource(TokenSourceConfig{Base: f})
		defer s.Close()
		var got *http.Request
		rt := s.Transport(tsRoundTripper(func(r *http.Request) (*http.Response, error) {
			got = r
			return &http.Response{StatusCode: 204, Body: http.NoBody, Request: r}, nil
		}))
		req := httptest.NewRequest("POST", "http://api.test/x", strings.NewReader("body"))
		req.Header.Set("X-Keep", "1")
		resp, err := rt.RoundTrip(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, "Bearer tok-1", got.Header.Get("Authorization"))
		assert.Equal(t, "1", got.Header.Get("X-Keep"))
		assert.Empty(t, req.Header.Get("Authorization"), "the caller's request is not modified")

		// No token: the body is closed and the typed error returned.
		f.set(true)
		time.Sleep(2 * time.Hour)
		body := &tsBody{Reader: strings.NewReader("x")}
		req = httptest.NewRequest("POST", "http://api.test/x", nil)
		req.Body = body
		_, err = rt.RoundTrip(req)
		assert.ErrorIs(t, err, ErrTokenUnavailable)
		assert.True(t, body.closed)
	})
}

type tsRoundTripper func(*http.Request) (*http.Response, error)

func (f tsRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type tsBody struct {
	io.Reader
	closed bool
}

func (b *tsBody) Close() error { b.closed = true; return nil }

func TestTokenSourceClientCredentialsEndToEnd(t *testing.T) {
	var mu sync.Mutex
	expiresIn, status, issued := 3600, 200, 0
	tokenSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		id, secret, _ := r.BasicAuth()
		if id != "svc" || secret != "s3cret" || r.FormValue("grant_type") != "client_credentials" {
			http.Error(w, `{"error":"invalid_client"}`, 401)
			return
		}
		if status != 200 {
			http.Error(w, "down", status)
			return
		}
		issued++
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"at-%d","token_type":"Bearer","expires_in":%d}`, issued, expiresIn)
	}))
	defer tokenSrv.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("Authorization"))
	}))
	defer api.Close()

	cc := &clientcredentials.Config{ClientID: "svc", ClientSecret: "s3cret", TokenURL: tokenSrv.URL}
	ctx := context.Background()
	s := NewTokenSource(TokenSourceConfig{Base: TokenSourceFunc(func() (*oauth2.Token, error) { return cc.Token(ctx) })})
	defer s.Close()
	client := &http.Client{Transport: s.Transport(nil)}

	resp, err := client.Get(api.URL)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, "Bearer at-1", string(b))

	// The endpoint fails: the valid token is still used.
	mu.Lock()
	status = 503
	mu.Unlock()
	resp, err = client.Get(api.URL)
	require.NoError(t, err)
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, "Bearer at-1", string(b))

	// A second source whose endpoint only hands out tokens shorter than
	// the margin never hands one out.
	mu.Lock()
	status, expiresIn = 200, 5
	mu.Unlock()
	s2 := NewTokenSource(TokenSourceConfig{Base: TokenSourceFunc(func() (*oauth2.Token, error) { return cc.Token(ctx) })})
	defer s2.Close()
	_, err = (&http.Client{Transport: s2.Transport(nil)}).Get(api.URL)
	assert.ErrorIs(t, err, ErrTokenUnavailable)
}

// tsHanging is a token endpoint that hangs, once hang is set, until
// release is closed.
type tsHanging struct {
	tsFake
	hang    atomic.Bool
	release chan struct{}
	inside  atomic.Int32
}

func (h *tsHanging) Token() (*oauth2.Token, error) {
	if h.hang.Load() {
		h.inside.Add(1)
		<-h.release
		h.inside.Add(-1)
	}
	return h.tsFake.Token()
}

// TestTokenSourceHangingEndpoint: Base without a deadline hangs (as the
// TokenSourceFunc example of the godoc may); Token keeps handing out the
// current token until ValidUntil, then fails with ErrTokenUnavailable at
// once instead of blocking; at most two calls of Base are outstanding; the
// source recovers when the endpoint answers again.
func TestTokenSourceHangingEndpoint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &tsHanging{tsFake: tsFake{life: 10 * time.Minute}, release: make(chan struct{})}
		var mu sync.Mutex
		var errEvents []TokenRefreshErrorEvent
		var okEvents []TokenRefreshEvent
		s := NewTokenSource(TokenSourceConfig{
			Base: h, FetchTimeout: 5 * time.Second, RetryMax: 30 * time.Second,
			OnRefreshError: func(e TokenRefreshErrorEvent) { mu.Lock(); errEvents = append(errEvents, e); mu.Unlock() },
			OnRefresh:      func(e TokenRefreshEvent) { mu.Lock(); okEvents = append(okEvents, e); mu.Unlock() },
		})
		defer s.Close()
		synctest.Wait()
		first, err := s.Token()
		require.NoError(t, err)
		h.hang.Store(true)

		validUntil := first.Expiry.Add(-DefaultTokenExpiryMargin)
		time.Sleep(time.Until(validUntil) - time.Millisecond)
		t0 := time.Now()
		tok, err := s.Token()
		require.NoError(t, err, "valid until ValidUntil, though the refresh hangs")
		assert.Equal(t, first.AccessToken, tok.AccessToken)
		assert.Equal(t, t0, time.Now(), "no wait")

		time.Sleep(2 * time.Millisecond)
		t0 = time.Now()
		_, err = s.Token()
		assert.ErrorIs(t, err, ErrTokenUnavailable, "by ValidUntil, not when the endpoint answers")
		assert.Less(t, time.Since(t0), 6*time.Second, "at most FetchTimeout")
		synctest.Wait()
		assert.LessOrEqual(t, h.inside.Load(), int32(maxTokenFlights), "bounded outstanding calls")
		st := s.Status()
		assert.False(t, st.Valid)
		assert.Positive(t, st.Failures)
		assert.ErrorIs(t, st.LastError, errTokenFetchTimeout)
		mu.Lock()
		require.NotEmpty(t, errEvents)
		assert.Equal(t, 5*time.Second, errEvents[0].Latency)
		mu.Unlock()

		// The endpoint answers again.
		h.hang.Store(false)
		close(h.release)
		synctest.Wait()
		time.Sleep(31 * time.Second)
		synctest.Wait()
		tok, err = s.Token()
		require.NoError(t, err)
		assert.NotEqual(t, first.AccessToken, tok.AccessToken)
		mu.Lock()
		require.NotEmpty(t, okEvents)
		assert.Zero(t, okEvents[0].Latency, "fake endpoint answers at once")
		mu.Unlock()
	})
}
