package idempotency_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
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

// enqueueAs queues a keyed POST as the verified caller sub, with a bearer
// token, through Enqueue (behind authentication, as it must be).
func enqueueAs(t *testing.T, x *idempotency.Idempotency, sub, key, body string) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(body))
	r.Header.Set("Idempotency-Key", key)
	r.Header.Set("Authorization", "Bearer token-of-"+sub)
	r.Header.Set("Cookie", "session=s3cret")
	r = r.WithContext(caller.NewContext(r.Context(), caller.New("https://idp.test", sub, []string{"write"}, "", nil)))
	w := httptest.NewRecorder()
	x.Enqueue(w, r)
	require.Equal(t, http.StatusAccepted, w.Code, w.Body.String())
}

// pollAs sends the same request again as sub, through the handler.
func pollAs(x *idempotency.Idempotency, h http.Handler, sub, key, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(body))
	r.Header.Set("Idempotency-Key", key)
	r.Header.Set("Authorization", "Bearer new-token-of-"+sub)
	r = r.WithContext(caller.NewContext(r.Context(), caller.New("https://idp.test", sub, []string{"write"}, "", nil)))
	w := httptest.NewRecorder()
	x.Handler(h).ServeHTTP(w, r)
	return w
}

func TestReplayerFailsAfterMaxAttempts(t *testing.T) {
	x := idempotency.New(idempotency.Config{Store: newStore(t)})
	var runs atomic.Int64
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		http.Error(w, "downstream down", http.StatusBadGateway)
	})
	enqueueAs(t, x, "alice", "k", "x")
	failed := make(chan idempotency.ReplayEvent, 1)
	var outcomes sync.Map
	rp := idempotency.NewReplayer(idempotency.ReplayerConfig{
		Idempotency: x, Handler: app, Interval: 5 * time.Millisecond, MaxAttempts: 3,
		OnFailed: func(ev idempotency.ReplayEvent) { failed <- ev },
		OnReplayed: func(ev idempotency.ReplayEvent) {
			outcomes.Store("replayed", ev)
		},
	})
	defer rp.Close()
	var ev idempotency.ReplayEvent
	select {
	case ev = <-failed:
	case <-time.After(5 * time.Second):
		t.Fatal("never failed")
	}
	rp.Close()
	assert.Equal(t, 3, ev.Attempts)
	assert.Equal(t, int64(3), runs.Load(), "tried MaxAttempts times, no more")
	_, replayed := outcomes.Load("replayed")
	assert.False(t, replayed)

	w := pollAs(x, app, "alice", "k", "x")
	assertProblem(t, w, http.StatusInternalServerError, idempotency.ProblemReplayFailed)
	assert.Equal(t, "true", w.Header().Get(idempotency.HeaderReplayed))
	var p struct {
		Attempts   int `json:"attempts"`
		LastStatus int `json:"last_status"`
	}
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &p))
	assert.Equal(t, 3, p.Attempts)
	assert.Equal(t, http.StatusBadGateway, p.LastStatus)
	assert.Equal(t, int64(3), runs.Load(), "the poll does not run it")
}

func TestReplayerTrialsWhileUnhealthy(t *testing.T) {
	x := idempotency.New(idempotency.Config{Store: newStore(t)})
	var (
		up      atomic.Bool
		healthy atomic.Bool
		runs    atomic.Int64
		mu      sync.Mutex
		events  []idempotency.ReplayEvent
	)
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		if !up.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})
	for i := range 5 {
		enqueueAs(t, x, "alice", "k"+strconv.Itoa(i), "x")
	}
	rp := idempotency.NewReplayer(idempotency.ReplayerConfig{
		Idempotency: x, Handler: app, Healthy: healthy.Load,
		Interval: time.Hour, TrialInterval: 10 * time.Millisecond, MaxAttempts: 2,
		OnReplayed: func(ev idempotency.ReplayEvent) { mu.Lock(); events = append(events, ev); mu.Unlock() },
		OnFailed:   func(ev idempotency.ReplayEvent) { t.Errorf("failed: %+v", ev) },
	})
	defer rp.Close()
	require.Eventually(t, func() bool { return runs.Load() >= 6 }, 5*time.Second, time.Millisecond)
	assert.Zero(t, len(events), "trials against a dead dependency store nothing")
	// Many trials failed, far more than MaxAttempts: they do not count.
	up.Store(true)
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(events) == 5 }, 5*time.Second, time.Millisecond,
		"a successful trial drains the queue at once, whatever Healthy says")
	mu.Lock()
	assert.True(t, events[0].Trial, "the first is the trial that found the recovery")
	for _, ev := range events {
		assert.Equal(t, http.StatusCreated, ev.Status)
		assert.Zero(t, ev.Attempts, "failed trials are no attempts")
	}
	for _, ev := range events[1:] {
		assert.False(t, ev.Trial)
	}
	mu.Unlock()
}

func TestReplayerBoundsConcurrencyAndKicks(t *testing.T) {
	x := idempotency.New(idempotency.Config{Store: newStore(t)})
	var cur, peak, runs atomic.Int64
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := cur.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(5 * time.Millisecond)
		cur.Add(-1)
		runs.Add(1)
		w.WriteHeader(http.StatusCreated)
	})
	rp := idempotency.NewReplayer(idempotency.ReplayerConfig{Idempotency: x, Handler: app, Concurrency: 3, Interval: time.Hour})
	defer rp.Close()
	time.Sleep(20 * time.Millisecond) // its first pass found nothing
	for i := range 20 {
		enqueueAs(t, x, "alice", "k"+strconv.Itoa(i), "x")
	}
	rp.Kick()
	require.Eventually(t, func() bool { return runs.Load() == 20 }, 5*time.Second, time.Millisecond, "Kick drains now")
	assert.LessOrEqual(t, peak.Load(), int64(3))
	assert.Greater(t, peak.Load(), int64(1), "replays run concurrently")
	rp.Close()
	rp.Close() // idempotent
}

func TestReplayerAuthorize(t *testing.T) {
	x := idempotency.New(idempotency.Config{Store: newStore(t)})
	var ran []string
	var mu sync.Mutex
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ran = append(ran, caller.FromContext(r.Context()).Subject)
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	})
	enqueueAs(t, x, "alice", "a", "x")
	enqueueAs(t, x, "mallory", "m", "x")
	rp := idempotency.NewReplayer(idempotency.ReplayerConfig{Idempotency: x, Handler: app, Interval: time.Hour,
		Authorize: func(_ *http.Request, c *idempotency.Caller) error {
			if c.Subject == "mallory" {
				return errors.New("revoked")
			}
			return nil
		}})
	defer rp.Close()
	// The Replayer's own first pass may have run them already.
	_, err := rp.Drain(context.Background())
	require.NoError(t, err)
	mu.Lock()
	assert.Equal(t, []string{"alice"}, ran)
	mu.Unlock()
	assertProblem(t, pollAs(x, app, "mallory", "m", "x"), http.StatusForbidden, idempotency.ProblemReplayRefused)
}

// TestQueuedCredentials: a queued request's credentials are never stored in
// plaintext; stripped by default, sealed with Config.Seal and given back to
// the replay; its recorded caller runs it either way.
func TestQueuedCredentials(t *testing.T) {
	block, err := aes.NewCipher(make([]byte, 32))
	require.NoError(t, err)
	gcm, err := cipher.NewGCM(block)
	require.NoError(t, err)
	for _, seal := range []cipher.AEAD{nil, gcm} {
		store := newStore(t)
		x := idempotency.New(idempotency.Config{Store: store, Seal: seal})
		enqueueAs(t, x, "alice", "k", "x")
		q, err := store.ClaimQueued(context.Background(), "peek", time.Millisecond, 10)
		require.NoError(t, err)
		require.Len(t, q, 1)
		req := q[0].Record.Request
		assert.Empty(t, req.Header.Get("Authorization"), "no plaintext token")
		assert.Empty(t, req.Header.Get("Cookie"), "no plaintext cookie")
		require.NotNil(t, req.Caller)
		assert.Equal(t, idempotency.Caller{Issuer: "https://idp.test", Subject: "alice", Scopes: []string{"write"}}, *req.Caller)
		if seal == nil {
			assert.Nil(t, req.Sealed)
		} else {
			require.NotEmpty(t, req.Sealed)
			assert.NotContains(t, string(req.Sealed), "token-of-alice")
		}
		time.Sleep(5 * time.Millisecond) // the peek's lease ends

		var got http.Header
		var who *caller.Caller
		app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got, who = r.Header.Clone(), caller.FromContext(r.Context())
			_, _ = io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusCreated)
		})
		n, err := x.Replay(context.Background(), x.Handler(app))
		require.NoError(t, err)
		require.Equal(t, 1, n)
		require.NotNil(t, who)
		assert.Equal(t, "alice", who.Subject)
		assert.Equal(t, []string{"write"}, who.Scopes)
		if seal == nil {
			assert.Empty(t, got.Get("Authorization"))
		} else {
			assert.Equal(t, "Bearer token-of-alice", got.Get("Authorization"), "unsealed for the replay")
			assert.Equal(t, "session=s3cret", got.Get("Cookie"))
		}
		rec, ok, err := store.Get(context.Background(), q[0].Key)
		require.NoError(t, err)
		require.True(t, ok)
		assert.Nil(t, rec.Request, "nothing of the request, sealed credentials included, outlives its completion")
	}
}

// TestReplayerTrialsLookPastAPoisonedHead: the oldest queued request always
// fails (its own fault, the dependency is back); trials take turns on the
// oldest few, so a later request's success finds the recovery.
func TestReplayerTrialsLookPastAPoisonedHead(t *testing.T) {
	x := idempotency.New(idempotency.Config{Store: newStore(t)})
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Idempotency-Key") == "poison" {
			http.Error(w, "always fails", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})
	enqueueAs(t, x, "alice", "poison", "x")
	enqueueAs(t, x, "alice", "fine", "y")
	trial := make(chan idempotency.ReplayEvent, 4)
	rp := idempotency.NewReplayer(idempotency.ReplayerConfig{
		Idempotency: x, Handler: app, Healthy: func() bool { return false },
		Interval: time.Hour, TrialInterval: 5 * time.Millisecond,
		OnReplayed: func(ev idempotency.ReplayEvent) {
			if ev.Trial {
				trial <- ev
			}
		},
	})
	defer rp.Close()
	select {
	case ev := <-trial:
		assert.Equal(t, http.StatusCreated, ev.Status)
	case <-time.After(5 * time.Second):
		t.Fatal("a poisoned head hid the recovery")
	}
}
