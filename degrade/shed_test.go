package degrade

import (
	"encoding/json"
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

	"github.com/holdfast-go/holdfast/internal/httpx"
)

// shedService: a gate with MaxConcurrent 10 (Read 7, Write 9) around a handler whose /slow
// requests block until released; /pay is Critical.
type shedService struct {
	c       *Controller
	srv     *httptest.Server
	release chan struct{}
	entered chan string
	events  []GateEvent
	mu      sync.Mutex
}

func newShedService(t *testing.T, wait time.Duration) *shedService {
	s := &shedService{release: make(chan struct{}), entered: make(chan string, 16)}
	stale := &Stale{}
	s.c = New(Config{
		MaxConcurrent: 10, ShedWait: wait, Stale: stale,
		Tier: func(r *http.Request) Tier {
			switch {
			case strings.HasPrefix(r.URL.Path, "/pay"):
				return Critical
			case r.Method == http.MethodGet:
				return Read
			}
			return Write
		},
		OnGate: func(ev GateEvent) { s.mu.Lock(); s.events = append(s.events, ev); s.mu.Unlock() },
	})
	t.Cleanup(s.c.Close)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/slow") {
			s.entered <- r.URL.Path
			<-s.release
		}
		w.Header().Set("Cache-Control", "max-age=0")
		_, _ = io.WriteString(w, "fresh "+r.URL.Path)
	})
	s.srv = httptest.NewServer(s.c.Handler(stale.Handler(h)))
	t.Cleanup(s.srv.Close)
	return s
}

type answer struct {
	code    int
	body    string
	header  http.Header
	elapsed time.Duration
}

func (s *shedService) do(t *testing.T, method, path string) answer {
	req, err := http.NewRequest(method, s.srv.URL+path, nil)
	require.NoError(t, err)
	start := time.Now()
	resp, err := s.srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b), resp.Header, time.Since(start)}
}

// block starts n requests that wait in the handler, and waits until they
// are there.
func (s *shedService) block(t *testing.T, method, path string, n int, wg *sync.WaitGroup) {
	for range n {
		wg.Add(1)
		go func() { defer wg.Done(); s.do(t, method, path) }()
	}
	for range n {
		select {
		case <-s.entered:
		case <-time.After(5 * time.Second):
			t.Fatal("blocked request did not arrive")
		}
	}
}

// Issue 14 point 1: saturated, the gate sheds Read before Write before
// Critical, answers a shed Read from the stale cache when it can, and
// everything else 503 + Retry-After problem+json at once.
func TestGateShedsByTier(t *testing.T) {
	s := newShedService(t, 2*time.Second)
	require.Equal(t, 200, s.do(t, http.MethodGet, "/items/cached").code) // stored

	var wg sync.WaitGroup
	s.block(t, http.MethodGet, "/items/slow", 7, &wg) // 7 of 10: Read's share is full

	a := s.do(t, http.MethodGet, "/items/cached")
	assert.Equal(t, 200, a.code, "a shed read with a stored response gets it")
	assert.Equal(t, "fresh /items/cached", a.body)
	assert.Equal(t, "overloaded, stale-if-error", a.header.Get(httpx.HeaderDegraded))

	a = s.do(t, http.MethodGet, "/items/other")
	assert.Equal(t, 503, a.code, "a shed read without a stored response")
	assert.Equal(t, "1", a.header.Get("Retry-After"))
	assert.Equal(t, "application/problem+json", a.header.Get("Content-Type"))
	assert.Empty(t, a.header.Get(httpx.HeaderDegraded))
	var p map[string]any
	require.NoError(t, json.Unmarshal([]byte(a.body), &p))
	assert.Equal(t, "https://holdfast-go.github.io/problems/overloaded", p["type"])
	assert.Equal(t, "read", p["tier"])
	assert.Less(t, a.elapsed, time.Second, "shed at once, not after ShedWait (2 s)")

	a = s.do(t, http.MethodPost, "/orders")
	assert.Equal(t, 200, a.code, "a write still has room")

	s.block(t, http.MethodPost, "/orders/slow", 2, &wg) // 9 of 10: Write's share is full
	a = s.do(t, http.MethodPost, "/orders")
	assert.Equal(t, 503, a.code, "a write is shed")
	assert.Less(t, a.elapsed, time.Second, "shed at once, not after ShedWait (2 s)")
	a = s.do(t, http.MethodPost, "/pay")
	assert.Equal(t, 200, a.code, "Critical gets the last slot")

	// Fill the last slot with a critical request: now even Critical waits.
	s.block(t, http.MethodPost, "/pay/slow", 1, &wg)
	assert.Equal(t, 10, s.c.Status().InFlight)
	assert.Equal(t, 10, s.c.Status().MaxConcurrent)

	done := make(chan answer, 1)
	go func() { done <- s.do(t, http.MethodPost, "/pay") }()
	require.Eventually(t, func() bool { return s.c.lim.waiting.Load() == 1 }, 5*time.Second, time.Millisecond,
		"the Critical request waits for a slot")
	a = s.do(t, http.MethodGet, "/items/other")
	assert.Equal(t, 503, a.code, "a read never jumps a waiting Critical")
	s.release <- struct{}{} // one slow request finishes: its slot goes to the waiting Critical
	select {
	case a = <-done:
		assert.Equal(t, 200, a.code, "the waiting Critical request got the freed slot")
	case <-time.After(3 * time.Second):
		t.Fatal("the waiting Critical request was not admitted")
	}
	close(s.release)
	wg.Wait()
	assert.EqualValues(t, 0, s.c.lim.inFlight(), "every slot came back")

	s.mu.Lock()
	defer s.mu.Unlock()
	var shed, staleShed int
	for _, ev := range s.events {
		if ev.Decision == DecisionShed {
			shed++
			if ev.Stale {
				staleShed++
			}
		}
	}
	assert.Equal(t, 4, shed)
	assert.Equal(t, 1, staleShed)
}

// A Critical request that waits longer than ShedWait is shed.
func TestGateCriticalWaitIsBounded(t *testing.T) {
	s := newShedService(t, 20*time.Millisecond)
	var wg sync.WaitGroup
	s.block(t, http.MethodPost, "/pay/slow", 10, &wg)
	a := s.do(t, http.MethodPost, "/pay")
	assert.Equal(t, 503, a.code)
	assert.GreaterOrEqual(t, a.elapsed, 20*time.Millisecond)
	assert.Less(t, a.elapsed, 2*time.Second, "bounded by ShedWait (20 ms), not by the blocked requests")
	close(s.release)
	wg.Wait()
	assert.EqualValues(t, 0, s.c.lim.inFlight())
}

// Issue 16 point 1 (degrade side): the queue can be attached after New,
// while requests are served, so the order of wiring does not matter.
func TestSetQueueAfterNew(t *testing.T) {
	c := New(Config{})
	defer c.Close()
	c.Force(ReadOnly, "drill")
	srv := httptest.NewServer(c.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
	defer srv.Close()
	post := func() int {
		resp, err := srv.Client().Post(srv.URL, "application/json", strings.NewReader("{}"))
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	assert.Equal(t, 503, post(), "no queue yet: refused")
	var queued atomic.Int32
	var wg sync.WaitGroup
	for range 4 { // attach and detach while requests are served: -race checks it
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				post()
			}
		}()
	}
	c.SetQueue(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		queued.Add(1)
		w.WriteHeader(http.StatusAccepted)
	}))
	wg.Wait()
	assert.Equal(t, 202, post(), "the queue attached after New takes writes")
	c.SetQueue(nil)
	assert.Equal(t, 503, post())
}
