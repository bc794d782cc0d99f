// Package statetest is the conformance suite of authfallback.StateStore:
// every implementation (authfallback.MemoryState, the Redis and PostgreSQL
// stores of the holdfast driver modules) passes [Run], and [RunFleet] runs
// a fleet of Verifiers sharing one store through an IdP outage over real
// HTTP.
package statetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
)

// Run runs the conformance suite against stores made by newStore. Each call
// of newStore must return an empty store of its own (e.g. with a fresh key
// prefix or table).
func Run(t *testing.T, newStore func(t *testing.T) authfallback.StateStore) {
	t.Run("Keys", func(t *testing.T) { testKeys(t, newStore(t)) })
	t.Run("Seen", func(t *testing.T) { testSeen(t, newStore(t)) })
	t.Run("SeenExpires", func(t *testing.T) { testSeenExpires(t, newStore(t)) })
	t.Run("Degraded", func(t *testing.T) { testDegraded(t, newStore(t)) })
	t.Run("DegradedExpires", func(t *testing.T) { testDegradedExpires(t, newStore(t)) })
	t.Run("TakeOnce", func(t *testing.T) { testTakeOnce(t, newStore(t)) })
}

func hash() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func ms(t time.Time) time.Time { return t.Truncate(time.Millisecond) }

func testKeys(t *testing.T, s authfallback.StateStore) {
	ctx := context.Background()
	_, ok, err := s.LoadKeys(ctx, "https://idp.test/")
	require.NoError(t, err)
	assert.False(t, ok, "empty store")

	t0 := ms(time.Now().Add(-time.Minute))
	rec := authfallback.KeySetRecord{Issuer: "https://idp.test/", FetchedAt: t0, Doc: []byte(`{"version":2,"jwks":{"keys":[1]}}`)}
	stored, err := s.SaveKeys(ctx, rec)
	require.NoError(t, err)
	assert.True(t, stored)
	got, ok, err := s.LoadKeys(ctx, rec.Issuer)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, rec.Doc, got.Doc)
	assert.True(t, rec.FetchedAt.Equal(got.FetchedAt), "FetchedAt %v, want %v", got.FetchedAt, rec.FetchedAt)
	assert.Equal(t, rec.Issuer, got.Issuer)

	older := rec
	older.FetchedAt = t0.Add(-time.Second)
	older.Doc = []byte(`{"older":true}`)
	stored, err = s.SaveKeys(ctx, older)
	require.NoError(t, err)
	assert.False(t, stored, "an older set never replaces a newer one")
	same := rec
	same.Doc = []byte(`{"same-time":true}`)
	stored, err = s.SaveKeys(ctx, same)
	require.NoError(t, err)
	assert.False(t, stored, "nor one of the same time")
	got, _, _ = s.LoadKeys(ctx, rec.Issuer)
	assert.Equal(t, rec.Doc, got.Doc)

	for name, bad := range map[string]authfallback.KeySetRecord{
		"empty doc":      {Issuer: rec.Issuer, FetchedAt: t0.Add(time.Hour)},
		"no issuer":      {FetchedAt: t0.Add(time.Hour), Doc: rec.Doc},
		"zero FetchedAt": {Issuer: rec.Issuer, Doc: rec.Doc},
	} {
		stored, err := s.SaveKeys(ctx, bad)
		assert.ErrorIs(t, err, authfallback.ErrStateRecord, name)
		assert.False(t, stored, name)
	}
	got, _, _ = s.LoadKeys(ctx, rec.Issuer)
	assert.Equal(t, rec.Doc, got.Doc, "refused records change nothing")

	newer := rec
	newer.FetchedAt = t0.Add(time.Second)
	newer.Doc = []byte(`{"newer":true}`)
	stored, err = s.SaveKeys(ctx, newer)
	require.NoError(t, err)
	assert.True(t, stored)
	got, _, _ = s.LoadKeys(ctx, rec.Issuer)
	assert.Equal(t, newer.Doc, got.Doc)

	_, ok, err = s.LoadKeys(ctx, "https://other.test/")
	require.NoError(t, err)
	assert.False(t, ok, "records are per issuer")
}

func testSeen(t *testing.T, s authfallback.StateStore) {
	ctx := context.Background()
	now := ms(time.Now())
	h := hash()
	_, ok, err := s.Seen(ctx, h)
	require.NoError(t, err)
	assert.False(t, ok)

	first := authfallback.SeenToken{TokenHash: h, Issuer: "https://idp.test/", SeenAt: now.Add(-time.Minute), ExpiresAt: now.Add(time.Minute), Expires: now.Add(time.Hour)}
	other := authfallback.SeenToken{TokenHash: hash(), Issuer: "https://idp.test/", SeenAt: now, ExpiresAt: now.Add(time.Minute), Expires: now.Add(time.Hour)}
	require.NoError(t, s.AddSeen(ctx, []authfallback.SeenToken{first, other}))
	require.NoError(t, s.AddSeen(ctx, nil), "an empty batch is fine")
	later := first
	later.SeenAt = now
	require.NoError(t, s.AddSeen(ctx, []authfallback.SeenToken{later}))

	got, ok, err := s.Seen(ctx, h)
	require.NoError(t, err)
	require.True(t, ok)
	assert.True(t, first.SeenAt.Equal(got.SeenAt), "the first record stays: SeenAt %v, want %v", got.SeenAt, first.SeenAt)
	assert.True(t, first.ExpiresAt.Equal(got.ExpiresAt))
	assert.Equal(t, first.Issuer, got.Issuer)
	assert.Equal(t, h, got.TokenHash)
	got, ok, err = s.Seen(ctx, other.TokenHash)
	require.NoError(t, err)
	require.True(t, ok)
	assert.True(t, other.SeenAt.Equal(got.SeenAt))

	assert.ErrorIs(t, s.AddSeen(ctx, []authfallback.SeenToken{{Expires: now.Add(time.Hour)}}), authfallback.ErrStateRecord, "no hash")
}

func testSeenExpires(t *testing.T, s authfallback.StateStore) {
	ctx := context.Background()
	now := time.Now()
	gone, soon := hash(), hash()
	require.NoError(t, s.AddSeen(ctx, []authfallback.SeenToken{
		{TokenHash: gone, Issuer: "i", SeenAt: now.Add(-time.Hour), ExpiresAt: now.Add(-time.Hour), Expires: now.Add(-time.Second)},
		{TokenHash: soon, Issuer: "i", SeenAt: now, ExpiresAt: now, Expires: now.Add(300 * time.Millisecond)},
	}))
	_, ok, err := s.Seen(ctx, gone)
	require.NoError(t, err)
	assert.False(t, ok, "already expired")
	_, ok, _ = s.Seen(ctx, soon)
	if time.Now().Before(now.Add(300 * time.Millisecond)) { // on a loaded machine it may be over already
		assert.True(t, ok, "kept until Expires")
	}
	time.Sleep(time.Until(now.Add(600 * time.Millisecond)))
	_, ok, _ = s.Seen(ctx, soon)
	assert.False(t, ok, "expired")
}

func degraded(issuer, h, sub string, first time.Time, count int) authfallback.DegradedAcceptance {
	return authfallback.DegradedAcceptance{
		Issuer: issuer, TokenHash: h, Subject: sub, ID: "jti-" + h[:8], IssuedAt: first.Add(-time.Hour),
		ExpiresAt: first.Add(time.Hour), KeyID: "k1", KeyFingerprint: "fp1", Reason: authfallback.ReasonJWKSUnreachable,
		Scopes: []string{"orders:read"}, PrimaryID: "p-" + h[:4], PrimaryIssuedAt: first.Add(-2 * time.Hour),
		FirstAccepted: first, LastAccepted: first, Count: count, Expires: first.Add(time.Hour),
	}
}

func testDegraded(t *testing.T, s authfallback.StateStore) {
	ctx := context.Background()
	now := ms(time.Now())
	const iss = "https://idp.test/"
	got, err := s.TakeDegraded(ctx, iss, 10)
	require.NoError(t, err)
	assert.Empty(t, got)

	a := degraded(iss, hash(), "alice", now, 2)
	a2 := a
	a2.FirstAccepted, a2.LastAccepted, a2.Count, a2.Expires = now.Add(-time.Second), now.Add(time.Second), 3, now.Add(2*time.Hour)
	a2.Subject = "changed"
	b := degraded(iss, hash(), "bob", now, 1)
	otherIss := degraded("https://other.test/", hash(), "carol", now, 1)
	require.NoError(t, s.AddDegraded(ctx, []authfallback.DegradedAcceptance{a, b, otherIss}))
	require.NoError(t, s.AddDegraded(ctx, []authfallback.DegradedAcceptance{a2}))
	require.NoError(t, s.AddDegraded(ctx, nil))
	assert.ErrorIs(t, s.AddDegraded(ctx, []authfallback.DegradedAcceptance{{Issuer: iss}}), authfallback.ErrStateRecord, "no hash")

	got, err = s.TakeDegraded(ctx, iss, 10)
	require.NoError(t, err)
	require.Len(t, got, 2, "records are per issuer")
	byHash := map[string]authfallback.DegradedAcceptance{}
	for _, r := range got {
		byHash[r.TokenHash] = r
	}
	ga := byHash[a.TokenHash]
	assert.Equal(t, 5, ga.Count, "counts add up")
	assert.True(t, a2.FirstAccepted.Equal(ga.FirstAccepted), "earliest first")
	assert.True(t, a2.LastAccepted.Equal(ga.LastAccepted), "latest last")
	assert.Equal(t, "alice", ga.Subject, "the first record's fields stay")
	assert.Equal(t, a.ID, ga.ID)
	assert.Equal(t, a.KeyID, ga.KeyID)
	assert.Equal(t, a.KeyFingerprint, ga.KeyFingerprint)
	assert.Equal(t, a.Reason, ga.Reason)
	assert.Equal(t, a.Scopes, ga.Scopes)
	assert.Equal(t, a.PrimaryID, ga.PrimaryID)
	assert.True(t, a.PrimaryIssuedAt.Equal(ga.PrimaryIssuedAt))
	assert.True(t, a.IssuedAt.Equal(ga.IssuedAt))
	assert.True(t, a.ExpiresAt.Equal(ga.ExpiresAt))
	assert.Equal(t, 1, byHash[b.TokenHash].Count)

	got, err = s.TakeDegraded(ctx, iss, 10)
	require.NoError(t, err)
	assert.Empty(t, got, "taken records are gone")
	got, err = s.TakeDegraded(ctx, otherIss.Issuer, 10)
	require.NoError(t, err)
	assert.Len(t, got, 1)

	// limit
	var many []authfallback.DegradedAcceptance
	for i := range 7 {
		many = append(many, degraded(iss, hash(), fmt.Sprint("user-", i), now, 1))
	}
	require.NoError(t, s.AddDegraded(ctx, many))
	page, err := s.TakeDegraded(ctx, iss, 3)
	require.NoError(t, err)
	assert.Len(t, page, 3)
	rest, err := s.TakeDegraded(ctx, iss, 10)
	require.NoError(t, err)
	assert.Len(t, rest, 4)
}

func testDegradedExpires(t *testing.T, s authfallback.StateStore) {
	ctx := context.Background()
	now := time.Now()
	const iss = "https://idp.test/"
	gone := degraded(iss, hash(), "alice", now, 1)
	gone.Expires = now.Add(-time.Second)
	soon := degraded(iss, hash(), "bob", now, 1)
	soon.Expires = now.Add(300 * time.Millisecond)
	require.NoError(t, s.AddDegraded(ctx, []authfallback.DegradedAcceptance{gone, soon}))
	time.Sleep(time.Until(now.Add(600 * time.Millisecond)))
	got, err := s.TakeDegraded(ctx, iss, 10)
	require.NoError(t, err)
	assert.Empty(t, got, "expired records are not returned")
}

func testTakeOnce(t *testing.T, s authfallback.StateStore) {
	ctx := context.Background()
	now := ms(time.Now())
	const iss = "https://idp.test/"
	const n = 50
	var recs []authfallback.DegradedAcceptance
	for i := range n {
		recs = append(recs, degraded(iss, hash(), fmt.Sprint("user-", i), now, 1))
	}
	require.NoError(t, s.AddDegraded(ctx, recs))
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				page, err := s.TakeDegraded(ctx, iss, 7)
				if !assert.NoError(t, err) || len(page) == 0 {
					return
				}
				mu.Lock()
				for _, r := range page {
					seen[r.TokenHash]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	assert.Len(t, seen, n, "every record taken")
	for h, c := range seen {
		assert.Equal(t, 1, c, "taken once: %s", h)
	}
}
