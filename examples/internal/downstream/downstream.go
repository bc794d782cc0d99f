// Package downstream is the fake provider the examples call: an item catalogue
// (reads) and a ledger (writes with a side effect), with switches for the
// outages the outage drill plays (5xx, timeouts) and counters for what a drill
// must measure: attempts that reached it and executions per logical write.
//
// The ledger honours Idempotency-Key like a payment API does (Stripe): a key
// it has seen gets the stored answer and does not execute again. A request
// without a key always executes, which is what makes a naive client's retry a
// duplicate side effect.
package downstream

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is the behaviour of the downstream.
type Mode int32

// Modes of a Server.
const (
	// Healthy answers every request.
	Healthy Mode = iota
	// Fail5xx answers every request with 503 and executes nothing.
	Fail5xx
	// Hang executes writes (the side effect happens) and then does not
	// answer until the client gives up or MaxHang passes: a timeout after
	// the fact, the case that turns blind retries into duplicates.
	Hang
)

// String returns the name of m.
func (m Mode) String() string {
	switch m {
	case Healthy:
		return "healthy"
	case Fail5xx:
		return "5xx"
	case Hang:
		return "timeouts"
	}
	return "mode(" + strconv.Itoa(int(m)) + ")"
}

// Write is the body of a ledger write. WriteID names the logical write, the
// same on every attempt and every retry of it by any party.
type Write struct {
	WriteID string `json:"write_id"`
	Amount  int    `json:"amount"`
}

// Server is the downstream's handler. It is safe for concurrent use.
type Server struct {
	// MaxHang bounds how long a request hangs in Hang mode. If zero, 10 s.
	MaxHang time.Duration

	mode atomic.Int32
	hits atomic.Int64

	mu    sync.Mutex
	execs map[string]int    // write id -> executions
	keys  map[string][]byte // Idempotency-Key -> stored answer
	seq   int
}

// New returns a healthy Server.
func New() *Server {
	return &Server{execs: make(map[string]int), keys: make(map[string][]byte)}
}

// SetMode switches the behaviour.
func (s *Server) SetMode(m Mode) { s.mode.Store(int32(m)) }

// Mode returns the current behaviour.
func (s *Server) Mode() Mode { return Mode(s.mode.Load()) }

// Hits counts the requests that reached the server (every attempt).
func (s *Server) Hits() int64 { return s.hits.Load() }

// Executions returns how many times the logical write id was executed.
func (s *Server) Executions(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.execs[id]
}

// ExecutionCounts returns a copy of the executions per write id.
func (s *Server) ExecutionCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]int, len(s.execs))
	for k, v := range s.execs {
		m[k] = v
	}
	return m
}

func (s *Server) maxHang() time.Duration {
	if s.MaxHang > 0 {
		return s.MaxHang
	}
	return 10 * time.Second
}

// ServeHTTP serves GET /items/{id} and POST /ledger.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	mode := s.Mode()
	if mode == Fail5xx {
		http.Error(w, "downstream unavailable", http.StatusServiceUnavailable)
		return
	}
	switch {
	case r.Method == http.MethodGet && len(r.URL.Path) > len("/items/") && r.URL.Path[:len("/items/")] == "/items/":
		if mode == Hang {
			s.hang(w, r)
			return
		}
		id := r.URL.Path[len("/items/"):]
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "max-age=0, stale-if-error=600")
		_ = json.NewEncoder(w).Encode(map[string]any{"id": id, "name": "item " + id, "price": len(id) * 100})
	case r.Method == http.MethodPost && r.URL.Path == "/ledger":
		s.ledger(w, r, mode)
	default:
		http.NotFound(w, r)
	}
}

func (s *Server) ledger(w http.ResponseWriter, r *http.Request, mode Mode) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	var wr Write
	if err != nil || json.Unmarshal(body, &wr) != nil || wr.WriteID == "" {
		http.Error(w, "bad write", http.StatusBadRequest)
		return
	}
	key := r.Header.Get("Idempotency-Key")
	s.mu.Lock()
	if key != "" {
		if ans, ok := s.keys[key]; ok {
			s.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Idempotent-Replayed", "true")
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write(ans)
			return
		}
	}
	s.execs[wr.WriteID]++
	s.seq++
	ans, _ := json.Marshal(map[string]any{"write_id": wr.WriteID, "seq": s.seq})
	if key != "" {
		s.keys[key] = ans
	}
	s.mu.Unlock()
	if mode == Hang {
		s.hang(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(ans)
}

// hang waits until the client gives up, or answers 504 after MaxHang.
func (s *Server) hang(w http.ResponseWriter, r *http.Request) {
	t := time.NewTimer(s.maxHang())
	defer t.Stop()
	select {
	case <-r.Context().Done():
	case <-t.C:
		http.Error(w, "downstream timed out", http.StatusGatewayTimeout)
	}
}
