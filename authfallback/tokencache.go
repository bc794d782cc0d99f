package authfallback

import (
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// tokenCache remembers verified tokens by the SHA-256 of the raw token, so a
// repeated token skips parsing and the signature check until it expires.
// It is bounded; an entry is only used while the key that verified it is
// still the key under its kid.
type tokenCache struct {
	max int
	mu  sync.RWMutex
	m   map[[32]byte]*cacheEntry
}

type cacheEntry struct {
	res *Result
	key *verifyKey
	// notAfter is exp plus leeway; notBefore is nbf minus leeway (zero if
	// the token has no nbf).
	notAfter  time.Time
	notBefore time.Time
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, m: make(map[[32]byte]*cacheEntry)}
}

func (e *cacheEntry) validAt(now time.Time) bool {
	return now.Before(e.notAfter) && !now.Before(e.notBefore)
}

// newEntry returns the cache entry for a token just verified, or nil when
// the cache is disabled.
func (c *tokenCache) newEntry(res *Result, k *verifyKey, claims jwt.MapClaims, leeway time.Duration) *cacheEntry {
	if c.max <= 0 || res.ExpiresAt.IsZero() {
		return nil
	}
	e := &cacheEntry{res: res, key: k, notAfter: res.ExpiresAt.Add(leeway)}
	if nbf, err := claims.GetNotBefore(); err == nil && nbf != nil {
		e.notBefore = nbf.Add(-leeway)
	}
	return e
}

func (c *tokenCache) get(h [32]byte) *cacheEntry {
	if c.max <= 0 {
		return nil
	}
	c.mu.RLock()
	e := c.m[h]
	c.mu.RUnlock()
	return e
}

func (c *tokenCache) put(h [32]byte, e *cacheEntry) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		for k, x := range c.m {
			if !x.validAt(now) {
				delete(c.m, k)
			}
		}
		// Still full: evict arbitrary entries (map order is random), a
		// tenth of the cache at a time so this sweep stays rare.
		for k := range c.m {
			if len(c.m) < c.max-c.max/10 || len(c.m) == 0 {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[h] = e
}

func (c *tokenCache) remove(h [32]byte) {
	c.mu.Lock()
	delete(c.m, h)
	c.mu.Unlock()
}

// retain drops every entry whose key is not the current key under its kid.
func (c *tokenCache) retain(current func(kid string) *verifyKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for h, e := range c.m {
		if current(e.res.KeyID) != e.key {
			delete(c.m, h)
		}
	}
}

func (c *tokenCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
