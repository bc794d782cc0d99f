package authfallback

// Verify-only trust of an offline issuer (OfflineConfig.PublicKeys,
// OfflineConfig.JWKSURL), signing through a crypto.Signer, the per-subject
// exchange rate and the JWKS endpoint of an issuing replica.

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/holdfast-go/holdfast/internal/httpx"
)

const (
	// DefaultExchangeRate is OfflineConfig.ExchangeRate when zero: offline
	// tokens per subject per minute (and burst).
	DefaultExchangeRate = 10
	// DefaultOfflineRefreshInterval is OfflineConfig.RefreshInterval when
	// zero.
	DefaultOfflineRefreshInterval = time.Minute
	// offlineKickInterval is the least time between two fetches of
	// OfflineConfig.JWKSURL triggered by unknown kids.
	offlineKickInterval = 10 * time.Second
	// offlineFetchTimeout bounds one fetch of OfflineConfig.JWKSURL.
	offlineFetchTimeout = 10 * time.Second
	// maxLimiterEntries bounds the subjects the exchange rate tracks.
	maxLimiterEntries = 100000
)

// ErrVerifyOnly is the error of Issue and Rotate on an OfflineIssuer made
// from public keys only (OfflineConfig.PublicKeys or JWKSURL).
var ErrVerifyOnly = errors.New("authfallback: offline issuer is verify-only (no signing key)")

// ErrRateLimited is matched (errors.Is) by a *RateLimitError.
var ErrRateLimited = fmt.Errorf("%w: exchange rate exceeded", ErrOfflineRefused)

// RateLimitError is the error of Issue when the subject has obtained
// OfflineConfig.ExchangeRate offline tokens in the last minute. It matches
// ErrRateLimited and ErrOfflineRefused.
type RateLimitError struct {
	// RetryAfter is when the subject may obtain the next token.
	RetryAfter time.Duration
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("%v (retry after %v)", ErrRateLimited, e.RetryAfter.Round(time.Second))
}

// Is reports whether target is ErrRateLimited or ErrOfflineRefused.
func (e *RateLimitError) Is(target error) bool {
	return target == ErrRateLimited || target == ErrOfflineRefused
}

func (o *OfflineIssuer) verifyOnly() bool {
	return o.cfg.PublicKeys != nil || o.cfg.JWKSURL != ""
}

// sign signs claims with the current key.
func (k *offlineKey) sign(claims jwt.MapClaims) (string, error) {
	if k.signer == nil {
		return "", ErrVerifyOnly
	}
	var m jwt.SigningMethod = jwt.SigningMethodEdDSA
	if k.alg == jwt.SigningMethodES256.Alg() {
		m = jwt.SigningMethodES256
	}
	t := jwt.NewWithClaims(m, claims)
	t.Header["kid"] = k.kid
	ss, err := t.SigningString()
	if err != nil {
		return "", err
	}
	var sig []byte
	switch k.alg {
	case jwt.SigningMethodEdDSA.Alg():
		sig, err = k.signer.Sign(rand.Reader, []byte(ss), crypto.Hash(0))
	default:
		d := sha256.Sum256([]byte(ss))
		var der []byte
		if der, err = k.signer.Sign(rand.Reader, d[:], crypto.SHA256); err == nil {
			sig, err = ecdsaRaw(der, 32)
		}
	}
	if err != nil {
		return "", err
	}
	// A Signer that signs with another key than it claims is caught here,
	// not by every verifier.
	if err := m.Verify(ss, sig, k.pub); err != nil {
		return "", fmt.Errorf("signature does not verify with the signer's public key: %w", err)
	}
	return ss + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// ecdsaRaw converts an ASN.1 ECDSA signature to the JWS form r || s.
func ecdsaRaw(der []byte, size int) ([]byte, error) {
	var rs struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &rs)
	if err != nil || len(rest) != 0 || rs.R == nil || rs.S == nil || rs.R.Sign() <= 0 || rs.S.Sign() <= 0 ||
		rs.R.BitLen() > 8*size || rs.S.BitLen() > 8*size {
		return nil, errors.New("invalid ECDSA signature from the signer")
	}
	out := make([]byte, 2*size)
	rs.R.FillBytes(out[:size])
	rs.S.FillBytes(out[size:])
	return out, nil
}

// exchangeLimiter is a token bucket per subject: rate per minute, burst
// rate.
type exchangeLimiter struct {
	rate int
	mu   sync.Mutex
	m    map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newExchangeLimiter(rate int) *exchangeLimiter {
	return &exchangeLimiter{rate: rate, m: map[string]*bucket{}}
}

// take takes one token of key's bucket, or reports how long until one is
// available.
func (l *exchangeLimiter) take(key string, now time.Time) (time.Duration, bool) {
	rate := float64(l.rate)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.m[key]
	if b == nil {
		if len(l.m) >= maxLimiterEntries {
			for k, x := range l.m {
				if x.tokens+now.Sub(x.at).Minutes()*rate >= rate {
					delete(l.m, k)
				}
			}
			for k := range l.m {
				if len(l.m) < maxLimiterEntries-maxLimiterEntries/10 {
					break
				}
				delete(l.m, k)
			}
		}
		b = &bucket{tokens: rate, at: now}
		l.m[key] = b
	}
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(rate, b.tokens+d.Minutes()*rate)
		b.at = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	return time.Duration((1 - b.tokens) / rate * float64(time.Minute)), false
}

// JWKSHandler returns an http.Handler that publishes the keys trusted now
// (JWKS) for verifying replicas (OfflineConfig.JWKSURL): GET or HEAD,
// application/jwk-set+json, Cache-Control: no-cache so a rotation is seen
// at the next fetch.
func (o *OfflineIssuer) JWKSHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Header().Set("Cache-Control", "no-cache")
		if r.Method == http.MethodGet {
			_, _ = w.Write(o.JWKS())
		}
	})
}

// offlineFetcher keeps the ring of a verify-only issuer fresh from
// OfflineConfig.JWKSURL.
type offlineFetcher struct {
	client   *http.Client
	url      string
	interval time.Duration
	lastKick atomic.Int64
	kick     chan struct{}
	close    chan struct{}
	done     chan struct{}
	once     sync.Once
	ctx      context.Context
	cancel   context.CancelFunc
}

func (o *OfflineIssuer) startFetcher() {
	f := &offlineFetcher{
		client: fetchClient(o.cfg.HTTPClient), url: o.cfg.JWKSURL, interval: o.cfg.RefreshInterval,
		kick: make(chan struct{}, 1), close: make(chan struct{}), done: make(chan struct{}),
	}
	if f.interval <= 0 {
		f.interval = DefaultOfflineRefreshInterval
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	o.fetcher = f
	failures := 0
	if err := o.fetchKeys(f.ctx); err != nil {
		failures = 1
	}
	go o.fetchLoop(failures)
}

// Close stops the background refresh of OfflineConfig.JWKSURL and waits
// for it. It is a no-op for other issuers, safe to call more than once,
// and always returns nil.
func (o *OfflineIssuer) Close() error {
	f := o.fetcher
	if f == nil {
		return nil
	}
	f.once.Do(func() {
		close(f.close)
		f.cancel()
	})
	<-f.done
	return nil
}

// kickUnknown asks for a fetch of JWKSURL because a token named an unknown
// kid of this issuer: at most once per offlineKickInterval, never waiting.
func (o *OfflineIssuer) kickUnknown() {
	f := o.fetcher
	if f == nil {
		return
	}
	now := time.Now().UnixNano()
	last := f.lastKick.Load()
	if last != 0 && now-last < int64(offlineKickInterval) {
		return
	}
	if f.lastKick.CompareAndSwap(last, now) {
		select {
		case f.kick <- struct{}{}:
		default:
		}
	}
}

func (o *OfflineIssuer) fetchLoop(failures int) {
	f := o.fetcher
	defer close(f.done)
	next := f.interval
	if failures > 0 {
		next = backoff(failures, f.interval)
	}
	t := time.NewTimer(next)
	defer t.Stop()
	for {
		select {
		case <-f.close:
			return
		case <-t.C:
		case <-f.kick:
			t.Stop()
		}
		if err := o.fetchKeys(f.ctx); err != nil {
			failures++
			next = backoff(failures, f.interval)
		} else {
			failures, next = 0, f.interval
		}
		t.Reset(next)
	}
}

// fetchKeys fetches JWKSURL once and installs the set, unless it is empty
// or invalid (the last good set stays).
func (o *OfflineIssuer) fetchKeys(ctx context.Context) error {
	f := o.fetcher
	ctx, cancel := context.WithTimeout(ctx, offlineFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := f.client.Do(req)
	if err != nil {
		o.fetchFailed(ctx, err)
		return err
	}
	defer httpx.DrainClose(resp.Body)
	if resp.StatusCode != http.StatusOK {
		err := fmt.Errorf("status %d", resp.StatusCode)
		o.fetchFailed(ctx, err)
		return err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxJWKSSize+1))
	if err != nil {
		o.fetchFailed(ctx, err)
		return err
	}
	ks, err := parseKeySet(b, []string{jwt.SigningMethodEdDSA.Alg(), jwt.SigningMethodES256.Alg()})
	if err != nil {
		o.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: offline key set refused", slog.String("url", f.url), slog.String("error", err.Error()))
		return err
	}
	o.rotateMu.Lock()
	old := o.ring.Load()
	n := &offlineRing{byKID: map[string]*offlineKey{}}
	var changed []string
	for kid, vk := range ks.byKID {
		k, err := o.publicKey(vk.pub, kid)
		if err != nil {
			continue
		}
		if prev := old.byKID[kid]; prev != nil {
			if prev.vk.fp == k.vk.fp {
				k = prev // keep the identity: verified-token cache entries stay valid
			} else {
				changed = append(changed, kid)
			}
		}
		n.byKID[kid] = k
	}
	if len(n.byKID) == 0 {
		o.rotateMu.Unlock()
		return ErrNoUsableKeys
	}
	o.ring.Store(n)
	o.rotateMu.Unlock()
	for _, kid := range changed {
		o.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: offline key changed under a known kid", slog.String("kid", kid), slog.String("url", f.url))
	}
	return nil
}

func (o *OfflineIssuer) fetchFailed(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	o.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: offline key set not fetched", slog.String("url", o.fetcher.url), slog.String("error", err.Error()))
}
