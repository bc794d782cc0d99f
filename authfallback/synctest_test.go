package authfallback_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
)

// fakeIdP is an in-memory JWKS endpoint for synctest bubbles, where a real
// server would not advance the fake clock.
type fakeIdP struct {
	mu    sync.Mutex
	keys  map[string]ed25519.PrivateKey
	order []string
	fail  bool
	hits  []time.Time
	// block, if set, holds every fetch until it is closed.
	block chan struct{}
}

func newFakeIdP(t *testing.T) *fakeIdP {
	f := &fakeIdP{keys: map[string]ed25519.PrivateKey{}}
	f.rotate(t)
	return f
}

func (f *fakeIdP) rotate(t *testing.T) string {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	kid := randomKID()
	f.mu.Lock()
	f.keys[kid] = priv
	f.order = append(f.order, kid)
	f.mu.Unlock()
	return kid
}

func (f *fakeIdP) setFail(b bool) { f.mu.Lock(); f.fail = b; f.mu.Unlock() }

func (f *fakeIdP) hitCount() int { f.mu.Lock(); defer f.mu.Unlock(); return len(f.hits) }

func (f *fakeIdP) hitTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.hits...)
}

func (f *fakeIdP) issue(t *testing.T, kid string, ttl time.Duration) string {
	f.mu.Lock()
	priv := f.keys[kid]
	f.mu.Unlock()
	now := time.Now()
	tk := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
		"iss": "https://idp.test/", "aud": "api", "sub": "s", "iat": now.Unix(), "exp": now.Add(ttl).Unix(),
	})
	tk.Header["kid"] = kid
	s, err := tk.SignedString(priv)
	require.NoError(t, err)
	return s
}

func (f *fakeIdP) RoundTrip(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	f.hits = append(f.hits, time.Now())
	block := f.block
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return nil, errors.New("connection refused")
	}
	doc := jwkset.JWKSMarshal{}
	for _, kid := range f.order {
		jwk, err := jwkset.NewJWKFromKey(f.keys[kid].Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid}})
		if err != nil {
			return nil, err
		}
		doc.Keys = append(doc.Keys, jwk.Marshal())
	}
	b, _ := json.Marshal(doc)
	return &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(string(b))), Request: r}, nil
}

func newFakeVerifier(t *testing.T, f *fakeIdP, mod func(*authfallback.Config)) *authfallback.Verifier {
	cfg := authfallback.Config{
		Issuer:     "https://idp.test/",
		Audience:   []string{"api"},
		JWKSURLs:   []string{"https://idp.test/jwks"},
		HTTPClient: &http.Client{Transport: f},
		AuditLog:   discard(),
	}
	if mod != nil {
		mod(&cfg)
	}
	v, err := authfallback.New(cfg)
	require.NoError(t, err)
	return v
}

func TestRefreshSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeIdP(t)
		v := newFakeVerifier(t, f, nil)
		defer v.Close()
		require.Equal(t, 1, f.hitCount())
		time.Sleep(5*time.Minute + time.Second)
		synctest.Wait()
		assert.Equal(t, 2, f.hitCount(), "refreshed every RefreshInterval")

		// Failures are retried with backoff, not a whole interval later.
		f.setFail(true)
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		hits := f.hitTimes()[2:] // the first two succeeded
		require.Greater(t, len(hits), 6, "retries come fast after a failure")
		want := time.Second
		for i := 1; i < len(hits); i++ {
			d := hits[i].Sub(hits[i-1])
			assert.GreaterOrEqual(t, d, want/2, "retry %d", i)
			assert.LessOrEqual(t, d, want, "retry %d", i)
			want = min(2*want, 5*time.Minute)
		}
		st := v.Status()
		assert.True(t, st.Fallback)
		assert.Equal(t, len(hits), st.Failures)
		assert.Equal(t, 1, st.KeyCount)

		f.setFail(false)
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		assert.False(t, v.Status().Fallback, "left fallback mode on the next success")
	})
}

func TestMaxStalenessOverTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeIdP(t)
		v := newFakeVerifier(t, f, func(c *authfallback.Config) {
			c.MaxStaleness = 2 * time.Hour
			c.Policy.MaxOfflineDuration = 3 * time.Hour // MaxStaleness comes first
		})
		defer v.Close()
		tok := f.issue(t, f.order[0], 10*time.Hour)
		_, err := v.Verify(context.Background(), tok)
		require.NoError(t, err)
		f.setFail(true)

		time.Sleep(time.Hour + 59*time.Minute)
		res, err := v.Verify(context.Background(), tok) // cached
		require.NoError(t, err)
		assert.True(t, res.Degraded)
		fresh := f.issue(t, f.order[0], time.Hour)
		res, err = v.Verify(context.Background(), fresh)
		require.NoError(t, err)
		assert.True(t, res.Degraded)

		time.Sleep(2 * time.Minute)
		_, err = v.Verify(context.Background(), tok)
		assert.ErrorIs(t, err, authfallback.ErrKeysTooStale, "fails closed, cache hit or not")
		_, err = v.Verify(context.Background(), f.issue(t, f.order[0], time.Hour))
		assert.ErrorIs(t, err, authfallback.ErrKeysTooStale)
		assert.True(t, v.Status().Stale)

		f.setFail(false)
		require.NoError(t, v.Refresh(context.Background()))
		_, err = v.Verify(context.Background(), tok)
		assert.NoError(t, err)
	})
}

func TestCachedTokenExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeIdP(t)
		v := newFakeVerifier(t, f, func(c *authfallback.Config) { c.Leeway = 10 * time.Second })
		defer v.Close()
		tok := f.issue(t, f.order[0], time.Minute)
		_, err := v.Verify(context.Background(), tok)
		require.NoError(t, err)
		time.Sleep(time.Minute + 5*time.Second)
		_, err = v.Verify(context.Background(), tok)
		require.NoError(t, err, "within leeway")
		time.Sleep(6 * time.Second)
		_, err = v.Verify(context.Background(), tok)
		assert.ErrorIs(t, err, jwt.ErrTokenExpired, "the cache does not outlive exp")
	})
}

func TestUnknownKIDRateLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeIdP(t)
		v := newFakeVerifier(t, f, nil) // UnknownKIDRefreshInterval: 1 min
		defer v.Close()
		flood := func() {
			for range 1000 {
				tk := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{"iss": "https://idp.test/", "aud": "api", "exp": time.Now().Add(time.Hour).Unix()})
				tk.Header["kid"] = randomKID()
				s, _ := tk.SignedString(f.keys[f.order[0]])
				_, err := v.Verify(context.Background(), s)
				require.ErrorIs(t, err, authfallback.ErrUnknownKeyID)
			}
			synctest.Wait()
		}
		flood()
		assert.Equal(t, 2, f.hitCount(), "one refresh for the whole flood")
		kid := f.rotate(t)
		flood()
		assert.Equal(t, 2, f.hitCount())
		rotated := f.issue(t, kid, time.Hour)
		_, err := v.Verify(context.Background(), rotated)
		assert.ErrorIs(t, err, authfallback.ErrUnknownKeyID)

		time.Sleep(time.Minute)
		flood() // the first of these triggers the refresh
		assert.Equal(t, 3, f.hitCount())
		_, err = v.Verify(context.Background(), rotated)
		assert.NoError(t, err, "the rotation is picked up within one UnknownKIDRefreshInterval")
	})
}

func TestHooksMayCallBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeIdP(t)
		var v *authfallback.Verifier
		var seen []authfallback.Status
		v = newFakeVerifier(t, f, func(c *authfallback.Config) {
			c.OnFallbackEnter = func(authfallback.FallbackEvent) { seen = append(seen, v.Status()) }
			c.OnRefreshError = func(authfallback.RefreshErrorEvent) { seen = append(seen, v.Status()) }
			c.OnFallbackExit = func(authfallback.FallbackEvent) {
				// Not deadlocked by the refresh that reports the exit.
				seen = append(seen, v.Status())
			}
		})
		defer v.Close()
		f.setFail(true)
		require.Error(t, v.Refresh(context.Background()))
		f.setFail(false)
		require.NoError(t, v.Refresh(context.Background()))
		synctest.Wait()
		require.Len(t, seen, 3)
		assert.True(t, seen[0].Fallback)
		assert.Equal(t, 1, seen[1].Failures)
		assert.False(t, seen[2].Fallback)
	})
}

func TestUnknownKIDNeverWaitsForAFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeIdP(t)
		v := newFakeVerifier(t, f, nil)
		defer v.Close()
		block := make(chan struct{})
		f.mu.Lock()
		f.block = block
		f.mu.Unlock()
		kid := f.rotate(t)
		rotated := f.issue(t, kid, time.Hour)
		known := f.issue(t, f.order[0], time.Hour)

		start := time.Now()
		_, err := v.Verify(context.Background(), rotated)
		require.ErrorIs(t, err, authfallback.ErrUnknownKeyID)
		synctest.Wait() // the triggered refresh is now stuck in the fetch
		require.Equal(t, 2, f.hitCount())
		_, err = v.Verify(context.Background(), rotated)
		require.ErrorIs(t, err, authfallback.ErrUnknownKeyID, "answered while the fetch hangs")
		_, err = v.Verify(context.Background(), known)
		require.NoError(t, err, "known keys keep verifying during the fetch")
		assert.Zero(t, time.Since(start), "no fake time passed: nothing waited")

		close(block)
		synctest.Wait()
		_, err = v.Verify(context.Background(), rotated)
		assert.NoError(t, err)
	})
}

func TestCloseDuringFetchIsNotAnOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeIdP(t)
		var entered, refreshErrs int
		v := newFakeVerifier(t, f, func(c *authfallback.Config) {
			c.OnFallbackEnter = func(authfallback.FallbackEvent) { entered++ }
			c.OnRefreshError = func(authfallback.RefreshErrorEvent) { refreshErrs++ }
		})
		f.mu.Lock()
		f.block = make(chan struct{})
		f.mu.Unlock()
		time.Sleep(5 * time.Minute)
		synctest.Wait() // the scheduled refresh hangs in its fetch
		require.Equal(t, 2, f.hitCount())
		require.NoError(t, v.Close())
		assert.Zero(t, entered)
		assert.Zero(t, refreshErrs)
		assert.False(t, v.Status().Fallback)

		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		assert.ErrorIs(t, v.Refresh(ctx), context.Canceled)
		assert.Zero(t, v.Status().Failures, "a caller that gives up is not an outage")
	})
}
