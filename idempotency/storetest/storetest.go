// Package storetest provides the conformance suite that every
// idempotency.Store implementation must pass.
//
// A store's test calls [Run] with a constructor:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) idempotency.Store {
//			return newStoreForTest(t) // fresh namespace, closed by t.Cleanup
//		})
//	}
//
// The suite uses real, short leases and TTLs (150 ms, and waits of 300 ms
// for them to expire) because shared stores keep time on their server; it
// sleeps for about a second in total and runs its cases in parallel. Keys are random, so cases never collide.
//
// [RunHTTP] runs the end-to-end checks over real HTTP with two service
// instances whose stores share one backend:
//
//	func TestE2E(t *testing.T) {
//		storetest.RunHTTP(t, func(t *testing.T) (a, b idempotency.Store) {
//			return twoStoresOnOneFreshNamespace(t)
//		})
//	}
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/idempotency"
)

// Timings of the suite. A lease of short is long enough for a few round trips
// to a shared store, and expired is long enough after it to be sure that it
// has expired on a server whose clock is not the test's.
const (
	short   = 150 * time.Millisecond
	expired = 300 * time.Millisecond
	longTTL = time.Minute
)

// Run runs the conformance suite against the stores that newStore returns.
//
// newStore is called once per case, possibly concurrently. Every store it
// returns must have a queue of its own: ClaimQueued takes records from the
// whole store, so a store that shares its queue with another live store (the
// same Redis key prefix, the same PostgreSQL table) makes the queue cases
// fail. Register cleanup (Close, dropping the namespace) with t.Cleanup.
func Run(t *testing.T, newStore func(t *testing.T) idempotency.Store) {
	t.Helper()
	cases := []struct {
		name string
		fn   func(t *testing.T, s idempotency.Store)
	}{
		{"ClaimCreates", testClaimCreates},
		{"ClaimExistingInFlight", testClaimExistingInFlight},
		{"CompleteAndGet", testCompleteAndGet},
		{"CompleteRefusedToOthers", testCompleteRefusedToOthers},
		{"CompleteAfterLease", testCompleteAfterLease},
		{"FingerprintMismatch", testFingerprintMismatch},
		{"ExtendKeepsLease", testExtendKeepsLease},
		{"LeaseExpiryTakeover", testLeaseExpiryTakeover},
		{"Release", testRelease},
		{"AbsentKey", testAbsentKey},
		{"DoneExpires", testDoneExpires},
		{"ResponseRoundTrip", testResponseRoundTrip},
		{"ConcurrentClaims", testConcurrentClaims},
		{"Enqueue", testEnqueue},
		{"EnqueueExisting", testEnqueueExisting},
		{"ClaimQueuedOrder", testClaimQueuedOrder},
		{"ReleaseReturnsToQueue", testReleaseReturnsToQueue},
		{"CompleteQueued", testCompleteQueued},
		{"QueuedTakeoverAfterCrash", testQueuedTakeoverAfterCrash},
		{"QueuedExpires", testQueuedExpires},
		{"ConcurrentClaimQueued", testConcurrentClaimQueued},
		{"Requeue", testRequeue},
		{"QueuedCaller", testQueuedCaller},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t)
			require.NotNil(t, s, "newStore returned nil")
			c.fn(t, s)
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// newKey returns a fresh random key shaped like the handler's keys.
func newKey() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func fp(s string) string { return "fp-" + s }

func testClaimCreates(t *testing.T, s idempotency.Store) {
	c := ctx(t)
	key := newKey()
	rec, claimed, err := s.Claim(c, key, fp("a"), "owner-1", longTTL)
	require.NoError(t, err)
	assert.True(t, claimed)
	assert.Equal(t, idempotency.StateInFlight, rec.State)
	assert.Equal(t, fp("a"), rec.Fingerprint)
	assert.Equal(t, "owner-1", rec.Owner)
	assert.NotZero(t, rec.Fence, "the first claim has a fence")
	assert.False(t, rec.Created.IsZero(), "Created is set")
	assert.InDelta(t, float64(longTTL), float64(rec.LeaseUntil.Sub(rec.Created)), float64(time.Second),
		"LeaseUntil is Created + lease")
	assert.Nil(t, rec.Response)
	assert.Nil(t, rec.Request)

	got, ok, err := s.Get(c, key)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, idempotency.StateInFlight, got.State)
	assert.Equal(t, "owner-1", got.Owner)
	assert.Equal(t, rec.Fence, got.Fence)
	assert.Equal(t, fp("a"), got.Fingerprint)
}

func testClaimExistingInFlight(t *testing.T, s idempotency.Store) {
	c := ctx(t)
	key := newKey()
	first, claimed, err := s.Claim(c, key, fp("a"), "owner-1", longTTL)
	require.NoError(t, err)
	require.True(t, claimed)

	rec, claimed, err := s.Claim(c, key, fp("a"), "owner-2", longTTL)
	require.NoError(t, err)
	assert.False(t, claimed, "a live lease is not taken over")
	assert.Equal(t, idempotency.StateInFlight, rec.State)
	assert.Equal(t, "owner-1", rec.Owner)
	assert.Equal(t, first.Fence, rec.Fence)
}

func sampleResponse() idempotency.Response {
	return idempotency.Response{
		Status: http.StatusCreated,
		Header: http.Header{
			"Content-Type": {"application/json"},
			"Location":     {"/orders/42"},
		},
		Body: []byte(`{"id":42}`),
	}
}

func testCompleteAndGet(t *testing.T, s idempotency.Store) {
	c := ctx(t)
	key := newKey()
	rec, claimed, err := s.Claim(c, key, fp("a"), "owner-1", longTTL)
	require.NoError(t, err)
	require.True(t, claimed)

	require.NoError(t, s.Complete(c, key, "owner-1", rec.Fence, sampleResponse(), longTTL))

	got, ok, err := s.Get(c, key)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, idempotency.StateDone, got.State)
	assert.Equal(t, fp("a"), got.Fingerprint)
	require.NotNil(t, got.Response)
	assertResponse(t, sampleResponse(), *got.Response)

	// A duplicate's Claim sees the done record and changes nothing.
	dup, claimed, err := s.Claim(c, key, fp("a"), "owner-2", longTTL)
	require.NoError(t, err)
	assert.False(t, claimed)
	assert.Equal(t, idempotency.StateDone, dup.State)
	require.NotNil(t, dup.Response)
	assertResponse(t, sampleResponse(), *dup.Response)

	// Completing again (a retry after a lost answer) succeeds and changes
	// nothing; releasing after completing is refused.
	other := idempotency.Response{Status: 500, Body: []byte("another")}
	assert.NoError(t, s.Complete(c, key, "owner-1", rec.Fence, other, longTTL), "Complete is idempotent")
	assert.ErrorIs(t, s.Complete(c, key, "owner-2", rec.Fence, other, longTTL), idempotency.ErrNotOwner)
	assert.ErrorIs(t, s.Complete(c, key, "owner-1", rec.Fence+1, other, longTTL), idempotency.ErrNotOwner)
	assert.ErrorIs(t, s.Release(c, key, "owner-1", rec.Fence), idempotency.ErrNotOwner)
	assert.ErrorIs(t, s.Extend(c, key, "owner-1", rec.Fence, longTTL), idempotency.ErrNotOwner)
	got, ok, err = s.Get(c, key)
	require.NoError(t, err)
	require.True(t, ok, "a refused release must not delete a done record")
	assert.Equal(t, idempotency.StateDone, got.State)
	require.NotNil(t, got.Response)
	assertResponse(t, sampleResponse(), *got.Response)
}

// testCompleteAfterLease: a completion whose lease ran out while no one
// took the record over still stores its response (the handler ran: a
// takeover would run it again).
func testCompleteAfterLease(t *testing.T, s idempotency.Store) {
	c := ctx(t)
	key := newKey()
	rec, claimed, err := s.Claim(c, key, fp("a"), "owner-1", short)
	require.NoError(t, err)
	require.True(t, claimed)
	time.Sleep(expired)
	require.NoError(t, s.Complete(c, key, "owner-1", rec.Fence, sampleResponse(), longTTL))
	got, claimed, err := s.Claim(c, key, fp("a"), "owner-2", longTTL)
	require.NoError(t, err)
	assert.False(t, claimed)
	assert.Equal(t, idempotency.StateDone, got.State)
}

// testRequeue: a failed replay returns to its place with one more attempt;
// Requeue is refused to others and for records without a request.
func testRequeue(t *testing.T, s idempotency.Store) {
	c := ctx(t)
	keys := enqueueN(t, s, 2, longTTL)
	q, err := s.ClaimQueued(c, "replayer", longTTL, 1)
	require.NoError(t, err)
	require.Equal(t, keys[:1], queuedKeys(q))
	assert.Zero(t, q[0].Record.Attempts)
	assert.ErrorIs(t, s.Requeue(c, keys[0], "other", q[0].Record.Fence), idempotency.ErrNotOwner)
	require.NoError(t, s.Requeue(c, keys[0], "replayer", q[0].Record.Fence))
	assert.ErrorIs(t, s.Requeue(c, keys[0], "replayer", q[0].Record.Fence), idempotency.ErrNotOwner, "no longer held")

	got, ok, err := s.Get(c, keys[0])
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, idempotency.StateQueued, got.State)
	assert.Equal(t, 1, got.Attempts)

	q, err = s.ClaimQueued(c, "replayer-2", longTTL, 10)
	require.NoError(t, err)
	require.Equal(t, keys, queuedKeys(q), "a requeued request keeps its place")
	assert.Equal(t, 1, q[0].Record.Attempts)
	assert.Zero(t, q[1].Record.Attempts)
	require.NoError(t, s.Requeue(c, keys[0], "replayer-2", q[0].Record.Fence))
	q2, err := s.ClaimQueued(c, "replayer-3", longTTL, 1)
	require.NoError(t, err)
	require.Len(t, q2, 1)
	assert.Equal(t, 2, q2[0].Record.Attempts, "attempts add up across claims")

	live := newKey()
	rec, _, err := s.Claim(c, live, fp("a"), "owner-1", longTTL)
	require.NoError(t, err)
	assert.ErrorIs(t, s.Requeue(c, live, "owner-1", rec.Fence), idempotency.ErrNotOwner, "a live claim has no request to requeue")
}

// testQueuedCaller: the recorded authorization and the sealed credentials
// round-trip, and leave with the completion.
func testQueuedCaller(t *testing.T, s idempotency.Store) {
	c := ctx(t)
	key := newKey()
	req := sampleRequest(1)
	req.Caller = &idempotency.Caller{Issuer: "https://idp.example", Subject: "alice", Scopes: []string{"read", "write"}, Reason: "stale-keys"}
	req.Sealed = []byte{0, 1, 2, 0xff}
	_, created, err := s.Enqueue(c, key, fp("q"), req, longTTL)
	require.NoError(t, err)
	require.True(t, created)
	got, ok, err := s.Get(c, key)
	require.NoError(t, err)
	require.True(t, ok)
	require.NotNil(t, got.Request)
	assert.Equal(t, req.Caller, got.Request.Caller)
	assert.Equal(t, req.Sealed, got.Request.Sealed)
	assertRequest(t, req, *got.Request)

	q, err := s.ClaimQueued(c, "replayer", longTTL, 10)
	require.NoError(t, err)
	require.Len(t, q, 1)
	require.NotNil(t, q[0].Record.Request)
	assert.Equal(t, req.Caller, q[0].Record.Request.Caller)
	require.NoError(t, s.Complete(c, key, "replayer", q[0].Record.Fence, sampleResponse(), longTTL))
	got, _, err = s.Get(c, key)
	require.NoError(t, err)
	assert.Nil(t, got.Request, "the sealed credentials leave with the request")
}

func testCompleteRefusedToOthers(t *testing.T, s idempotency.Store) {
	c := ctx(t)
	key := newKey()
	rec, claimed, err := s.Claim(c, key, fp("a"), "owner-1", longTTL)
	require.NoError(t, err)
	require.True(t, claimed)

	other := idempotency.Response{Status: 500, Body: []byte("wrong")}
	assert.ErrorIs(t, s.Complete(c, key, "owner-2", rec.Fence, other, longTTL), idempotency.ErrNotOwner, "wrong owner")
	assert.ErrorIs(t, s.Complete(c, key, "owner-1", rec.Fence+1, other, longTTL), idempotency.ErrNotOwner, "wrong fence")
	assert.ErrorIs(t, s.Extend(c, key, "owner-2", rec.Fence, longTTL), idempotency.ErrNotOwner)
	assert.ErrorIs(t, s.Release(c, key, "owner-2", rec.Fence), idempotency.ErrNotOwner)
	assert.ErrorIs(t, s.Release(c, key, "owner-1", rec.Fence+1), idempotency.ErrNotOwner)

	got, ok, err := s.Get(c, key)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, idempotency.StateInFlight, got.State, "refused calls change nothing")
	assert.Equal(t, "owner-1", got.Owner)
	assert.Nil(t, got.Response)
}

func testFingerprintMismatch(t *testing.T, s idempotency.Store) {
	c := ctx(t)
	key := newKey()
	_, claimed, err := s.Claim(c, key, fp("a"), "owner-1", short)
	require.NoError(t, err)
	require.True(t, claimed)

	rec, claimed, err := s.Claim(c, key, fp("b"), "owner-2", short)
	require.NoError(t, err)
	assert.False(t, claimed)
	assert.Equal(t, fp("a"), rec.Fingerprint, "Claim returns the existing record")
	assert.Equal(t, "owner-1", rec.Owner)

	// Even after the lease expired, another fingerprint never takes over.
	time.Sleep(expired)
	rec, claimed, err = s.Claim(c, key, fp("b"), "owner-2", short)
	require.NoError(t, err)
	assert.False(t, claimed, "an expired lease is taken over only with the same fingerprint")
	assert.Equal(t, fp("a"), rec.Fingerprint)
	assert.Equal(t, "owner-1", rec.Owner)
}

func testExtendKeepsLease(t *testing.T, s idempotency.Store) {
	c := ctx(t)
	key := newKey()
	rec, claimed, err := s.Claim(c, key, fp("a"), "owner-1", short)
	require.NoError(t, err)
	require.True(t, claimed)

	time.Sleep(short / 2)
	// Extended for long: the takeover attempt below comes after the first
	// lease whatever the machine's load, and within this one.
	require.NoError(t, s.Extend(c, key, "owner-1", rec.Fence, longTTL))
	got, ok, err := s.Get(c, key)
	require.NoError(t, err)
	require.True(t, ok)
	assert.True(t, got.LeaseUntil.After(rec.LeaseUntil), "Extend moves LeaseUntil")

	time.Sleep(expired) // past the first lease, within the extended one
	again, claimed, err := s.Claim(c, key, fp("a"), "owner-2", short)
	require.NoError(t, err)
	assert.False(t, claimed, "an extended lease is not taken over")
	assert.Equal(t, "owner-1", again.Owner)
	assert.Equal(t, rec.Fence, again.Fence)
	require.NoError(t, s.Complete(c, key, "owner-1", rec.Fence, sampleResponse(), longTTL))
}

func testLeaseExpiryTakeover(t *testing.T, s idempotency.Store) {
	c := ctx(t)
	key := newKey()
	old, claimed, err := s.Claim(c, key, fp("a"), "owner-1", short)
	require.NoError(t, err)
	require.True(t, claimed)

	time.Sleep(expired)
	rec, claimed, err := s.Claim(c, key, fp("a"), "owner-2", longTTL)
	require.NoError(t, err)
	require.True(t, claimed, "an expired lease with the same fingerprint is taken over")
	assert.Equal(t, idempotency.StateInFlight, rec.State)
	assert.Equal(t, "owner-2", rec.Owner)
	assert.Greater(t, rec.Fence, old.Fence, "the fence increases on takeover")
	assert.True(t, rec.LeaseUntil.After(old.LeaseUntil), "the lease restarts")

	// The stale owner is refused everything, with either fence.
	for _, f := range []uint64{old.Fence, rec.Fence} {
		assert.ErrorIs(t, s.Extend(c, key, "owner-1", f, longTTL), idempotency.ErrNotOwner)
		assert.ErrorIs(t, s.Complete(c, key, "owner-1", f, idempotency.Response{Status: 200, Body: []byte("stale")}, longTTL), idempotency.ErrNotOwner)
		assert.ErrorIs(t, s.Release(c, key, "owner-1", f), idempotency.ErrNotOwner)
	}
	// The new owner with the old fence is refused too.
	assert.ErrorIs(t, s.Complete(c, key, "owner-2", old.Fence, idempotency.Response{Status: 200}, longTTL), idempotency.ErrNotOwner)

	require.NoError(t, s.Extend(c, key, "owner-2", rec.Fence, longTTL))
	require.NoError(t, s.Complete(c, key, "owner-2", rec.Fence, sampleResponse(), longTTL))
	got, ok, err := s.Get(c, key)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, idempotency.StateDone, got.State)
	require.NotNil(t, got.Response)
	assertResponse(t, sampleResponse(), *got.Response)
}

func testRelease(t *testing.T, s idempotency.Store) {
	c := ctx(t)
	key := newKey()
	rec, claimed, err := s.Claim(c, key, fp("a"), "owner-1", longTTL)
	require.NoError(t, err)
	require.True(t, claimed)

	require.NoError(t, s.Release(c, key, "owner-1", rec.Fence))
	_, ok, err := s.Get(c, key)
	require.NoError(t, err)
	assert.False(t, ok, "a released claim without a queued request is deleted")
	assert.ErrorIs(t, s.Release(c, key, "owner-1", rec.Fence), idempotency.ErrNotOwner, "released twice")
	assert.ErrorIs(t, s.Complete(c, key, "owner-1", rec.Fence, sampleResponse(), longTTL), idempotency.ErrNotOwner, "completed after release")

	// The key is free again, even for another fingerprint.
	rec2, claimed, err := s.Claim(c, key, fp("b"), "owner-2", longTTL)
	require.NoError(t, err)
	assert.True(t, claimed)
	assert.Equal(t, "owner-2", rec2.Owner)
	assert.Equal(t, fp("b"), rec2.Fingerprint)
}

func testAbsentKey(t *testing.T, s idempotency.Store) {
	c := ctx(t)
	key := newKey()
	_, ok, err := s.Get(c, key)
	require.NoError(t, err)
	assert.False(t, ok)
	assert.ErrorIs(t, s.Extend(c, key, "owner-1", 1, longTTL), idempotency.ErrNotOwner)
	assert.ErrorIs(t, s.Complete(c, key, "owner-1", 1, sampleResponse(), longTTL), idempotency.ErrNotOwner)
	assert.ErrorIs(t, s.Release(c, key, "owner-1", 1), idempotency.ErrNotOwner)
	_, ok, err = s.Get(c, key)
	require.NoError(t, err)
	assert.False(t, ok, "refused calls create nothing")
}

func testDoneExpires(t *testing.T, s idempotency.Store) {
	c := ctx(t)
	key := newKey()
	rec, claimed, err := s.Claim(c, key, fp("a"), "owner-1", longTTL)
	require.NoError(t, err)
	require.True(t, claimed)
	start := time.Now()
	require.NoError(t, s.Complete(c, key, "owner-1", rec.Fence, sampleResponse(), short))

	_, ok, err := s.Get(c, key)
	require.NoError(t, err)
	if time.Since(start) < short { // on a loaded machine the ttl may be over already
		require.True(t, ok, "a done record is kept for its ttl")
	}

	time.Sleep(expired)
	_, ok, err = s.Get(c, key)
	require.NoError(t, err)
	assert.False(t, ok, "a done record is gone after its ttl")

	rec2, claimed, err := s.Claim(c, key, fp("b"), "owner-2", longTTL)
	require.NoError(t, err)
	assert.True(t, claimed, "an expired key is free")
	assert.Equal(t, fp("b"), rec2.Fingerprint)
}

func binaryBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	// Mix in random bytes so no store can get away with text encodings.
	_, _ = rand.Read(b[256:])
	return b
}

func testResponseRoundTrip(t *testing.T, s idempotency.Store) {
	c := ctx(t)
	for _, tc := range []idempotency.Response{
		{
			Status: http.StatusAccepted,
			Header: http.Header{
				"Content-Type": {"application/octet-stream"},
				"Link":         {`</a>; rel="next"`, `</b>; rel="prev"`},
				"X-Multi":      {"one", "two, three", ""},
				"X-Utf8":       {"héllo ✓"},
			},
			Body: binaryBody(64 << 10),
		},
		{Status: http.StatusNoContent},
		{Status: http.StatusOK, Header: http.Header{}, Body: []byte{}},
		{Status: http.StatusBadRequest, Body: []byte{0, 0, 0, '\n', '\r', 0xff}},
	} {
		key := newKey()
		rec, claimed, err := s.Claim(c, key, fp("a"), "owner-1", longTTL)
		require.NoError(t, err)
		require.True(t, claimed)
		require.NoError(t, s.Complete(c, key, "owner-1", rec.Fence, tc, longTTL))
		got, ok, err := s.Get(c, key)
		require.NoError(t, err)
		require.True(t, ok)
		require.NotNil(t, got.Response)
		assertResponse(t, tc, *got.Response)
	}

	// Requests round-trip the same way.
	req := idempotency.Request{
		Method: http.MethodPatch,
		URL:    "/orders/7?x=1&y=%20z&x=2",
		Header: http.Header{
			"Content-Type":  {"application/octet-stream"},
			"Authorization": {"Bearer abc"},
			"X-Multi":       {"a", "b"},
		},
		Body: binaryBody(4 << 10),
	}
	key := newKey()
	_, created, err := s.Enqueue(c, key, fp("q"), req, longTTL)
	require.NoError(t, err)
	require.True(t, created)
	got, ok, err := s.Get(c, key)
	require.NoError(t, err)
	require.True(t, ok)
	require.NotNil(t, got.Request)
	assertRequest(t, req, *got.Request)
}

func testConcurrentClaims(t *testing.T, s idempotency.Store) {
	c := ctx(t)
	key := newKey()
	const n = 16
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		mu      sync.Mutex
		winners []string
		owners  = map[string]int{}
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := fmt.Sprintf("owner-%d", i)
			<-start
			rec, claimed, err := s.Claim(c, key, fp("a"), owner, longTTL)
			if !assert.NoError(t, err) {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if claimed {
				winners = append(winners, owner)
			}
			owners[rec.Owner]++
		}()
	}
	close(start)
	wg.Wait()
	require.Len(t, winners, 1, "exactly one concurrent claim wins")
	assert.Equal(t, map[string]int{winners[0]: n}, owners, "every claimer sees the winner")
}

func sampleRequest(i int) idempotency.Request {
	return idempotency.Request{
		Method: http.MethodPost,
		URL:    fmt.Sprintf("/orders?n=%d", i),
		Header: http.Header{"Content-Type": {"application/json"}},
		Body:   []byte(fmt.Sprintf(`{"n":%d}`, i)),
	}
}

func testEnqueue(t *testing.T, s idempotency.Store) {
	c := ctx(t)
	key := newKey()
	rec, created, err := s.Enqueue(c, key, fp("q"), sampleRequest(1), longTTL)
	require.NoError(t, err)
	assert.True(t, created)
	assert.Equal(t, idempotency.StateQueued, rec.State)
	assert.Equal(t, fp("q"), rec.Fingerprint)
	require.NotNil(t, rec.Request)
	assertRequest(t, sampleRequest(1), *rec.Request)

	again, created, err := s.Enqueue(c, key, fp("q"), sampleRequest(2), longTTL)
	require.NoError(t, err)
	assert.False(t, created, "a key is enqueued once")
	assert.Equal(t, idempotency.StateQueued, again.State)
	require.NotNil(t, again.Request)
	assertRequest(t, sampleRequest(1), *again.Request)

	// A client polling through the handler's Claim sees the queued record.
	polled, claimed, err := s.Claim(c, key, fp("q"), "owner-1", longTTL)
	require.NoError(t, err)
	assert.False(t, claimed, "a queued record is not claimed by Claim")
	assert.Equal(t, idempotency.StateQueued, polled.State)
}

func testEnqueueExisting(t *testing.T, s idempotency.Store) {
	c := ctx(t)
	key := newKey()
	_, claimed, err := s.Claim(c, key, fp("a"), "owner-1", longTTL)
	require.NoError(t, err)
	require.True(t, claimed)
	rec, created, err := s.Enqueue(c, key, fp("a"), sampleRequest(1), longTTL)
	require.NoError(t, err)
	assert.False(t, created)
	assert.Equal(t, idempotency.StateInFlight, rec.State)
	assert.Equal(t, "owner-1", rec.Owner)
	assert.Nil(t, rec.Request)

	queued, err := s.ClaimQueued(c, "replayer", longTTL, 10)
	require.NoError(t, err)
	assert.Empty(t, queued, "an in-flight claim is not queued")
}

func enqueueN(t *testing.T, s idempotency.Store, n int, ttl time.Duration) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = newKey()
		_, created, err := s.Enqueue(ctx(t), keys[i], fp(keys[i]), sampleRequest(i), ttl)
		require.NoError(t, err)
		require.True(t, created)
	}
	return keys
}

func queuedKeys(q []idempotency.Queued) []string {
	keys := make([]string, len(q))
	for i := range q {
		keys[i] = q[i].Key
	}
	return keys
}

func testClaimQueuedOrder(t *testing.T, s idempotency.Store) {
	c := ctx(t)
	keys := enqueueN(t, s, 3, longTTL)
	before, ok, err := s.Get(c, keys[0])
	require.NoError(t, err)
	require.True(t, ok)

	q, err := s.ClaimQueued(c, "replayer", longTTL, 2)
	require.NoError(t, err)
	require.Equal(t, keys[:2], queuedKeys(q), "oldest first, at most limit")
	for i, item := range q {
		assert.Equal(t, idempotency.StateInFlight, item.Record.State)
		assert.Equal(t, "replayer", item.Record.Owner)
		assert.Equal(t, fp(keys[i]), item.Record.Fingerprint)
		require.NotNil(t, item.Record.Request, "the request stays with the claimed record")
		assertRequest(t, sampleRequest(i), *item.Record.Request)
		assert.True(t, item.Record.LeaseUntil.After(item.Record.Created))
	}
	assert.Greater(t, q[0].Record.Fence, before.Fence, "claiming a queued record increases its fence")

	got, ok, err := s.Get(c, keys[0])
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, idempotency.StateInFlight, got.State)
	assert.Equal(t, "replayer", got.Owner)

	rest, err := s.ClaimQueued(c, "replayer-2", longTTL, 10)
	require.NoError(t, err)
	assert.Equal(t, keys[2:], queuedKeys(rest), "claimed records are not handed out twice")
	none, err := s.ClaimQueued(c, "replayer-3", longTTL, 10)
	require.NoError(t, err)
	assert.Empty(t, none)
}

func testReleaseReturnsToQueue(t *testing.T, s idempotency.Store) {
	c := ctx(t)
	keys := enqueueN(t, s, 2, longTTL)
	q, err := s.ClaimQueued(c, "replayer", longTTL, 1)
	require.NoError(t, err)
	require.Equal(t, keys[:1], queuedKeys(q))

	require.NoError(t, s.Release(c, keys[0], "replayer", q[0].Record.Fence))
	got, ok, err := s.Get(c, keys[0])
	require.NoError(t, err)
	require.True(t, ok, "a released queued request is not deleted")
	assert.Equal(t, idempotency.StateQueued, got.State)
	require.NotNil(t, got.Request)
	assertRequest(t, sampleRequest(0), *got.Request)

	q, err = s.ClaimQueued(c, "replayer-2", longTTL, 10)
	require.NoError(t, err)
	assert.Equal(t, keys, queuedKeys(q), "a released request keeps its place in the queue")
	if len(q) > 0 {
		assert.ErrorIs(t, s.Complete(c, keys[0], "replayer", q[0].Record.Fence, sampleResponse(), longTTL),
			idempotency.ErrNotOwner, "the first replayer lost the record")
	}
}

func testCompleteQueued(t *testing.T, s idempotency.Store) {
	c := ctx(t)
	keys := enqueueN(t, s, 1, longTTL)
	q, err := s.ClaimQueued(c, "replayer", longTTL, 5)
	require.NoError(t, err)
	require.Len(t, q, 1)
	require.NoError(t, s.Complete(c, keys[0], "replayer", q[0].Record.Fence, sampleResponse(), longTTL))

	got, ok, err := s.Get(c, keys[0])
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, idempotency.StateDone, got.State)
	require.NotNil(t, got.Response)
	assertResponse(t, sampleResponse(), *got.Response)

	none, err := s.ClaimQueued(c, "replayer", longTTL, 5)
	require.NoError(t, err)
	assert.Empty(t, none, "a completed request leaves the queue")

	// The polling client's Claim now sees the final response.
	polled, claimed, err := s.Claim(c, keys[0], fp(keys[0]), "client", longTTL)
	require.NoError(t, err)
	assert.False(t, claimed)
	assert.Equal(t, idempotency.StateDone, polled.State)
}

func testQueuedTakeoverAfterCrash(t *testing.T, s idempotency.Store) {
	c := ctx(t)
	keys := enqueueN(t, s, 2, longTTL)
	// A live replay lease (a long one: however slow the machine, it is live
	// when the second claim comes) is not taken over.
	live, err := s.ClaimQueued(c, "live", longTTL, 1)
	require.NoError(t, err)
	require.Equal(t, keys[:1], queuedKeys(live))
	none, err := s.ClaimQueued(c, "early", longTTL, 1)
	require.NoError(t, err)
	require.Equal(t, keys[1:], queuedKeys(none), "a live replay lease is not taken over")
	require.NoError(t, s.Release(c, keys[1], "early", none[0].Record.Fence))
	require.NoError(t, s.Release(c, keys[0], "live", live[0].Record.Fence))

	// A replayer claims the first and crashes: its short lease runs out.
	q, err := s.ClaimQueued(c, "crashed", short, 1)
	require.NoError(t, err)
	require.Equal(t, keys[:1], queuedKeys(q), "a released record keeps its place")
	time.Sleep(expired)
	again, err := s.ClaimQueued(c, "replayer", longTTL, 10)
	require.NoError(t, err)
	require.Equal(t, keys, queuedKeys(again), "an expired replay claim is taken over in its place")
	assert.Greater(t, again[0].Record.Fence, q[0].Record.Fence)
	assert.Equal(t, "replayer", again[0].Record.Owner)
	require.NotNil(t, again[0].Record.Request)

	assert.ErrorIs(t, s.Complete(c, keys[0], "crashed", q[0].Record.Fence, sampleResponse(), longTTL), idempotency.ErrNotOwner)
	require.NoError(t, s.Complete(c, keys[0], "replayer", again[0].Record.Fence, sampleResponse(), longTTL))
}

func testQueuedExpires(t *testing.T, s idempotency.Store) {
	c := ctx(t)
	keys := enqueueN(t, s, 1, short)
	time.Sleep(expired)
	_, ok, err := s.Get(c, keys[0])
	require.NoError(t, err)
	assert.False(t, ok, "a queued record is gone after its ttl")
	q, err := s.ClaimQueued(c, "replayer", longTTL, 10)
	require.NoError(t, err)
	assert.Empty(t, q)
}

func testConcurrentClaimQueued(t *testing.T, s idempotency.Store) {
	c := ctx(t)
	keys := enqueueN(t, s, 6, longTTL)
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		mu    sync.Mutex
		seen  = map[string]int{}
	)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for {
				q, err := s.ClaimQueued(c, fmt.Sprintf("replayer-%d", i), longTTL, 1)
				if !assert.NoError(t, err) || len(q) == 0 {
					return
				}
				mu.Lock()
				seen[q[0].Key]++
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	want := map[string]int{}
	for _, k := range keys {
		want[k] = 1
	}
	assert.Equal(t, want, seen, "every queued record is claimed exactly once")
}

func assertResponse(t *testing.T, want, got idempotency.Response) {
	t.Helper()
	assert.Equal(t, want.Status, got.Status)
	assertHeader(t, want.Header, got.Header)
	assert.True(t, bytes.Equal(want.Body, got.Body), "body differs: want %d bytes, got %d", len(want.Body), len(got.Body))
}

func assertRequest(t *testing.T, want, got idempotency.Request) {
	t.Helper()
	assert.Equal(t, want.Method, got.Method)
	assert.Equal(t, want.URL, got.URL)
	assertHeader(t, want.Header, got.Header)
	assert.True(t, bytes.Equal(want.Body, got.Body), "body differs: want %d bytes, got %d", len(want.Body), len(got.Body))
}

// assertHeader compares headers; nil and empty are the same.
func assertHeader(t *testing.T, want, got http.Header) {
	t.Helper()
	if len(want) == 0 && len(got) == 0 {
		return
	}
	assert.Equal(t, want, got)
}
