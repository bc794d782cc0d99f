package storetest

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
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/internal/caller"
)

// RunHTTP runs end-to-end checks over real HTTP: two service instances (two
// idempotency handlers on two httptest servers) share one backend, as two
// replicas of a service would. newStores returns the two instances' stores:
// two Store values on one fresh namespace, each with its own connection
// (client or pool), as two processes would have. It is called once per
// case; register cleanup with t.Cleanup.
//
// The cases: 50 concurrent duplicates, spread over both instances and
// overlapping for certain, run the handler once and every answer is the
// stored response or 409, and another caller's duplicate is not answered
// from it; requests queued on one instance and replayed by both at once run
// once each and are answered on the other; an instance that stops renewing
// its lease is taken over by the other once the lease expired on the
// store's clock, and its late completion is refused; a handler that runs
// for several leases keeps its claim, renewed on the store, so the other
// instance answers 409 rather than running it again; a retry with a
// refreshed token of the same subject is a replay on the other instance,
// and another subject gets a record of its own; a write queued on one
// instance whose token expired before recovery is run once by the other's
// Replayer as its recorded caller, and its outcome reaches the caller's new
// token on both, never another caller; two Replayers with concurrency over
// the shared store run each of 40 queued writes once. Authentication is a
// stand-in for authfallback's Handler: it puts the verified caller in the
// context. The takeover and lease cases wait two and three seconds.
func RunHTTP(t *testing.T, newStores func(t *testing.T) (a, b idempotency.Store)) {
	t.Helper()
	cases := []struct {
		name string
		fn   func(t *testing.T, a, b idempotency.Store)
	}{
		{"TwoInstancesDuplicates", testTwoInstancesDuplicates},
		{"TwoInstancesQueue", testTwoInstancesQueue},
		{"TwoInstancesTakeover", testTwoInstancesTakeover},
		{"TwoInstancesLeaseRenewed", testTwoInstancesLeaseRenewed},
		{"TokenRefreshReplays", testTokenRefreshReplays},
		{"QueuedTokenExpired", testQueuedTokenExpired},
		{"ReplayersOnBothInstances", testReplayersOnBothInstances},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, b := newStores(t)
			require.NotNil(t, a, "newStores returned nil")
			require.NotNil(t, b, "newStores returned nil")
			c.fn(t, a, b)
		})
	}
}

type answer struct {
	status   int
	body     string
	replayed bool
}

// post sends a keyed POST as caller. It may be called from any goroutine: a
// transport error fails the test and answers status 0.
func post(t *testing.T, srv *httptest.Server, caller, path, key, body string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Errorf("new request: %v", err)
		return answer{}
	}
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("Authorization", "Bearer "+caller)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Errorf("POST %s: %v", path, err)
		return answer{}
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	return answer{resp.StatusCode, string(b), resp.Header.Get(idempotency.HeaderReplayed) == "true"}
}

func newServer(t *testing.T, h http.Handler) *httptest.Server {
	srv := httptest.NewServer(authenticate(h))
	t.Cleanup(srv.Close)
	return srv
}

// authenticate stands for authfallback's Handler: a bearer token
// "<subject>[.<version>]" is the verified caller <subject> of issuer
// https://idp.test (whatever its version: a refreshed token of the same
// subject), with the scope "write"; a token "expired..." is refused with
// 401, as is a request without a token.
func authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" || strings.HasPrefix(tok, "expired") {
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		sub, _, _ := strings.Cut(tok, ".")
		c := caller.New("https://idp.test", sub, []string{"write"}, "", nil)
		next.ServeHTTP(w, r.WithContext(caller.NewContext(r.Context(), c)))
	})
}

// subject is the verified caller's subject, "" if none.
func subject(r *http.Request) string {
	if c := caller.FromContext(r.Context()); c != nil {
		return c.Subject
	}
	return ""
}

// testTwoInstancesDuplicates sends 50 concurrent duplicates, alternating
// between the instances; the first to run waits until half of the others
// were turned away, so they overlap for certain.
func testTwoInstancesDuplicates(t *testing.T, a, b idempotency.Store) {
	const n = 50
	var (
		runs, conflicts atomic.Int64
		enough          = make(chan struct{})
		once            sync.Once
	)
	onConflict := func(idempotency.Event) {
		if conflicts.Add(1) == n/2 {
			once.Do(func() { close(enough) })
		}
	}
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		select {
		case <-enough:
		case <-time.After(10 * time.Second):
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = fmt.Fprintf(w, `{"order":1,"caller":%q}`, r.Header.Get("Authorization"))
	})
	var servers []*httptest.Server
	for _, s := range []idempotency.Store{a, b} {
		x := idempotency.New(idempotency.Config{Store: s, OnConflict: onConflict})
		servers = append(servers, newServer(t, x.Handler(app)))
	}
	const stored = `{"order":1,"caller":"Bearer alice"}`

	start := make(chan struct{})
	answers := make(chan answer, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			answers <- post(t, servers[i%2], "alice", "/orders", `"dup"`, `{"sku":7}`)
		}()
	}
	close(start)
	wg.Wait()
	close(answers)

	assert.Equal(t, int64(1), runs.Load(), "the handler ran exactly once across both instances")
	var created, replayed, conflict int
	for a := range answers {
		switch a.status {
		case http.StatusCreated:
			created++
			assert.Equal(t, stored, a.body)
			if a.replayed {
				replayed++
			}
		case http.StatusConflict:
			conflict++
		default:
			t.Errorf("unexpected answer %d %s", a.status, a.body)
		}
	}
	assert.Equal(t, n, created+conflict, "every answer is the stored response or 409")
	assert.Equal(t, created-1, replayed, "every 201 but the first is the stored one")
	assert.GreaterOrEqual(t, conflict, n/2)

	// Afterwards both instances replay the stored response.
	for _, srv := range servers {
		got := post(t, srv, "alice", "/orders", `"dup"`, `{"sku":7}`)
		assert.Equal(t, answer{http.StatusCreated, stored, true}, got)
	}
	got := post(t, servers[1], "alice", "/orders", `"dup"`, `{"sku":8}`)
	assert.Equal(t, http.StatusUnprocessableEntity, got.status, "another payload under the key")
	assert.Equal(t, int64(1), runs.Load())

	// Another caller with the same key and payload gets a record of its own.
	got = post(t, servers[0], "mallory", "/orders", `"dup"`, `{"sku":7}`)
	assert.Equal(t, answer{http.StatusCreated, `{"order":1,"caller":"Bearer mallory"}`, false}, got,
		"no caller is answered from another's record")
	assert.Equal(t, int64(2), runs.Load())
}

// testTwoInstancesQueue queues writes on one instance and replays them from
// both at once: each runs once, and a client polling either instance gets
// the final response.
func testTwoInstancesQueue(t *testing.T, a, b idempotency.Store) {
	var (
		mu  sync.Mutex
		ran = map[string]int{}
	)
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		ran[string(body)]++
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(body)
	})
	xa := idempotency.New(idempotency.Config{Store: a})
	xb := idempotency.New(idempotency.Config{Store: b})
	queueing := newServer(t, http.HandlerFunc(xa.Enqueue))
	serving := newServer(t, xb.Handler(app))

	const n = 6
	for i := range n {
		got := post(t, queueing, "alice", "/orders", fmt.Sprintf(`"q%d"`, i), fmt.Sprintf("order-%d", i))
		require.Equal(t, http.StatusAccepted, got.status, got.body)
	}
	got := post(t, serving, "alice", "/orders", `"q0"`, "order-0")
	assert.Equal(t, http.StatusAccepted, got.status, "polling before the replay: still queued")

	var wg sync.WaitGroup
	var total atomic.Int64
	for _, x := range []*idempotency.Idempotency{xa, xb, xa, xb} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done, err := x.Replay(context.Background(), app)
			assert.NoError(t, err)
			total.Add(int64(done))
		}()
	}
	wg.Wait()
	assert.Equal(t, int64(n), total.Load())
	mu.Lock()
	for i := range n {
		assert.Equal(t, 1, ran[fmt.Sprintf("order-%d", i)], "order-%d ran once", i)
	}
	mu.Unlock()
	for _, srv := range []*httptest.Server{serving, queueing} {
		got = post(t, srv, "alice", "/orders", `"q3"`, "order-3")
		assert.Equal(t, answer{http.StatusCreated, "order-3", true}, got, "the poll gets the replayed response")
	}
}

// renewing counts the lease renewals that reached the store.
type renewing struct {
	idempotency.Store
	n atomic.Int64
}

func (r *renewing) Extend(ctx context.Context, key, owner string, fence uint64, lease time.Duration) error {
	err := r.Store.Extend(ctx, key, owner, fence, lease)
	if err == nil {
		r.n.Add(1)
	}
	return err
}

// partitioned is a replica cut off from the store after its claim: its
// lease renewals fail, as a crashed or partitioned process's would.
type partitioned struct{ idempotency.Store }

func (partitioned) Extend(context.Context, string, string, uint64, time.Duration) error {
	return errors.New("partitioned")
}

// testTwoInstancesTakeover: instance A claims and stops renewing its lease;
// once the lease expired on the store's clock, instance B takes over and
// runs the request, and A's late completion is refused by the fence: B's
// response is the one stored and replayed.
func testTwoInstancesTakeover(t *testing.T, a, b idempotency.Store) {
	const lease = 2 * time.Second // margin for a loaded machine: B's first attempt must come within it
	var (
		runs    atomic.Int64
		started = make(chan struct{}, 2)
		unblock = make(chan struct{})
	)
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := runs.Add(1)
		started <- struct{}{}
		if n == 1 {
			<-unblock // instance A hangs
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = fmt.Fprintf(w, "run-%d", n)
	})
	var lost atomic.Int64
	xa := idempotency.New(idempotency.Config{Store: partitioned{a}, Lease: lease,
		OnRelease: func(e idempotency.Event) {
			if e.Reason == idempotency.ReasonLeaseLost {
				lost.Add(1)
			}
		}})
	xb := idempotency.New(idempotency.Config{Store: b, Lease: lease})
	sa := newServer(t, xa.Handler(app))
	sb := newServer(t, xb.Handler(app))

	first := make(chan answer, 1)
	go func() { first <- post(t, sa, "alice", "/pay", `"crash"`, "100") }()
	<-started
	assert.Equal(t, http.StatusConflict, post(t, sb, "alice", "/pay", `"crash"`, "100").status, "A's lease is live")

	// A's lease expires on the store's clock: B's retries get 409 until
	// then, and B takes over after.
	var got answer
	require.Eventually(t, func() bool {
		got = post(t, sb, "alice", "/pay", `"crash"`, "100")
		return got.status != http.StatusConflict
	}, 10*lease, 50*time.Millisecond, "B takes over once A's lease expired")
	assert.Equal(t, answer{http.StatusCreated, "run-2", false}, got, "B took over and ran it")

	close(unblock)
	assert.Equal(t, answer{http.StatusCreated, "run-1", false}, <-first,
		"A's answer reaches its client, but A cannot store it")
	assert.Equal(t, int64(2), runs.Load())
	for _, srv := range []*httptest.Server{sa, sb} {
		assert.Equal(t, answer{http.StatusCreated, "run-2", true}, post(t, srv, "alice", "/pay", `"crash"`, "100"),
			"the stored response is B's")
	}
	assert.Equal(t, int64(1), lost.Load(), "A learns that it lost the lease")
}

// testTwoInstancesLeaseRenewed: instance A's handler runs for several
// leases; A renews its lease on the store, so instance B's duplicate, sent
// long after the first lease ended, gets 409 and does not run.
func testTwoInstancesLeaseRenewed(t *testing.T, a, b idempotency.Store) {
	const lease = 2 * time.Second // margin for a loaded machine: B must act within it of A's last renewal
	var (
		runs    atomic.Int64
		started = make(chan struct{}, 1)
		unblock = make(chan struct{})
	)
	renewed := &renewing{Store: a}
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if runs.Add(1) == 1 {
			started <- struct{}{}
			<-unblock
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "slow")
	})
	sa := newServer(t, idempotency.New(idempotency.Config{Store: renewed, Lease: lease}).Handler(app))
	sb := newServer(t, idempotency.New(idempotency.Config{Store: b, Lease: lease}).Handler(app))

	first := make(chan answer, 1)
	go func() { first <- post(t, sa, "alice", "/pay", `"slow"`, "100") }()
	<-started
	// Four renewals (one every third of a lease): the first lease is over,
	// only renewals keep A's claim; B comes right after the last.
	require.Eventually(t, func() bool { return renewed.n.Load() >= 4 }, 20*lease, 10*time.Millisecond,
		"A renews its lease")
	assert.Equal(t, http.StatusConflict, post(t, sb, "alice", "/pay", `"slow"`, "100").status,
		"A's renewed lease is live")
	close(unblock)
	assert.Equal(t, answer{http.StatusCreated, "slow", false}, <-first)
	assert.Equal(t, answer{http.StatusCreated, "slow", true}, post(t, sb, "alice", "/pay", `"slow"`, "100"))
	assert.Equal(t, int64(1), runs.Load())
}

// testTokenRefreshReplays: a client refreshes its token between two
// attempts (same subject): the second attempt, on the other instance, gets
// the stored response and the handler ran once; another subject with the
// same key and payload gets a record of its own.
func testTokenRefreshReplays(t *testing.T, a, b idempotency.Store) {
	var runs atomic.Int64
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := runs.Add(1)
		w.WriteHeader(http.StatusCreated)
		_, _ = fmt.Fprintf(w, "order %d for %s", n, subject(r))
	})
	sa := newServer(t, idempotency.New(idempotency.Config{Store: a}).Handler(app))
	sb := newServer(t, idempotency.New(idempotency.Config{Store: b}).Handler(app))

	first := post(t, sa, "alice.token-1", "/orders", `"refresh"`, "100")
	assert.Equal(t, answer{http.StatusCreated, "order 1 for alice", false}, first)
	again := post(t, sb, "alice.token-2", "/orders", `"refresh"`, "100")
	assert.Equal(t, answer{http.StatusCreated, "order 1 for alice", true}, again, "same subject, new token: a replay")
	assert.Equal(t, int64(1), runs.Load(), "one execution")

	bob := post(t, sb, "bob.token-1", "/orders", `"refresh"`, "100")
	assert.Equal(t, answer{http.StatusCreated, "order 2 for bob", false}, bob, "another subject: its own record")
	assert.Equal(t, int64(2), runs.Load())
}

// queueService is an instance whose gate queues writes (after
// authentication) while degraded, and whose replays run the chain without
// authentication, as the recorded caller.
func queueService(t *testing.T, s idempotency.Store, app http.Handler, degraded *atomic.Bool) (*httptest.Server, *idempotency.Idempotency, http.Handler) {
	x := idempotency.New(idempotency.Config{Store: s})
	chain := x.Handler(app)
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if degraded.Load() && r.Method == http.MethodPost {
			x.Enqueue(w, r)
			return
		}
		chain.ServeHTTP(w, r)
	}))
	return srv, x, chain
}

// testQueuedTokenExpired: a write queued (202) on instance A whose token
// expires before recovery is replayed by instance B's Replayer as the
// recorded caller, runs once, and its outcome reaches the same caller's new
// token on either instance; another caller gets nothing of it.
func testQueuedTokenExpired(t *testing.T, a, b idempotency.Store) {
	var (
		mu   sync.Mutex
		runs []string
	)
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		runs = append(runs, subject(r)+":"+string(body))
		mu.Unlock()
		if r.Header.Get("Authorization") != "" && subject(r) == "alice" && strings.HasPrefix(string(body), "queued") {
			t.Errorf("a replayed request carried the stored token %q", r.Header.Get("Authorization"))
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = fmt.Fprintf(w, "%s for %s", body, subject(r))
	})
	var degraded atomic.Bool
	degraded.Store(true)
	sa, _, _ := queueService(t, a, app, &degraded)
	sb, xb, chainB := queueService(t, b, app, &degraded)

	got := post(t, sa, "alice.token-1", "/orders", `"exp"`, "queued-1")
	require.Equal(t, http.StatusAccepted, got.status, got.body)
	assert.Equal(t, http.StatusAccepted, post(t, sb, "alice.token-1", "/orders", `"exp"`, "queued-1").status,
		"polled on the other instance while degraded: still queued")

	// Recovery: alice's token has expired meanwhile; B's replayer runs it.
	degraded.Store(false)
	assert.Equal(t, http.StatusUnauthorized, post(t, sb, "expired.alice", "/orders", `"exp"`, "queued-1").status)
	var replayed atomic.Int64
	rp := idempotency.NewReplayer(idempotency.ReplayerConfig{
		Idempotency: xb, Handler: chainB, Interval: 20 * time.Millisecond,
		OnReplayed: func(ev idempotency.ReplayEvent) {
			replayed.Add(1)
			assert.Equal(t, http.StatusCreated, ev.Status)
		},
	})
	t.Cleanup(rp.Close)
	require.Eventually(t, func() bool { return replayed.Load() == 1 }, 5*time.Second, 10*time.Millisecond)

	for _, srv := range []*httptest.Server{sa, sb} {
		got = post(t, srv, "alice.token-2", "/orders", `"exp"`, "queued-1")
		assert.Equal(t, answer{http.StatusCreated, "queued-1 for alice", true}, got, "the new token gets the outcome")
	}
	bob := post(t, sb, "bob.token-1", "/orders", `"exp"`, "queued-1")
	assert.Equal(t, answer{http.StatusCreated, "queued-1 for bob", false}, bob, "another caller gets nothing of alice's write")
	mu.Lock()
	assert.Equal(t, []string{"alice:queued-1", "bob:queued-1"}, runs, "alice's write ran once, as alice")
	mu.Unlock()
}

// testReplayersOnBothInstances: both instances run a Replayer over the
// shared store with concurrency; every queued write runs exactly once.
func testReplayersOnBothInstances(t *testing.T, a, b idempotency.Store) {
	var (
		mu  sync.Mutex
		ran = map[string]int{}
	)
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		ran[string(body)]++
		mu.Unlock()
		time.Sleep(time.Millisecond)
		w.WriteHeader(http.StatusCreated)
	})
	var degraded atomic.Bool
	degraded.Store(true)
	sa, xa, chainA := queueService(t, a, app, &degraded)
	_, xb, chainB := queueService(t, b, app, &degraded)
	const n = 40
	for i := range n {
		got := post(t, sa, fmt.Sprintf("user%d", i%3), "/orders", fmt.Sprintf(`"w%d"`, i), fmt.Sprintf("w%d", i))
		require.Equal(t, http.StatusAccepted, got.status, got.body)
	}
	var stored atomic.Int64
	for _, c := range []struct {
		x *idempotency.Idempotency
		h http.Handler
	}{{xa, chainA}, {xb, chainB}} {
		rp := idempotency.NewReplayer(idempotency.ReplayerConfig{Idempotency: c.x, Handler: c.h, Concurrency: 4,
			Interval: 10 * time.Millisecond, OnReplayed: func(idempotency.ReplayEvent) { stored.Add(1) }})
		t.Cleanup(rp.Close)
	}
	require.Eventually(t, func() bool { return stored.Load() >= n }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	assert.Len(t, ran, n)
	for k, v := range ran {
		assert.Equal(t, 1, v, "%s ran once", k)
	}
	assert.Equal(t, int64(n), stored.Load())
}
