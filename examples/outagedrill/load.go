package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/idempotency"
)

type opKind int

const (
	opRead   opKind = iota // GET /items/{id}
	opWrite                // POST /orders, a new logical write
	opResend               // POST /orders again, same key and body: a client retry after a lost answer
)

func (o opKind) String() string { return [...]string{"read", "write", "resend"}[o] }

// result is one request of the load generator.
type result struct {
	stack    int
	at       time.Duration // since the drill started
	phase    int
	op       opKind
	status   int    // 0: transport error or timeout
	degraded string // the Holdfast-Degraded header
	latency  time.Duration
	writeID  string
	subject  string
}

// write is a logical write as the load generator knows it.
type write struct {
	id, key, token, subject string
	body                    []byte
	phase                   int
	acked                   bool // some answer was 2xx (including 202)
	queued                  bool // some answer was 202 and none 201 yet
}

// load drives one stack.
type load struct {
	stack    int
	url      string
	client   *http.Client
	tokens   []token
	interval time.Duration
	clock    *drillClock

	mu      sync.Mutex
	results []result
	writes  map[string]*write
	order   []string
}

type token struct{ subject, raw string }

func newLoad(stack int, url string, tokens []token, interval, timeout time.Duration, clock *drillClock) *load {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	return &load{
		stack: stack, url: url, tokens: tokens, interval: interval, clock: clock,
		client: &http.Client{Transport: tr, Timeout: timeout},
		writes: make(map[string]*write),
	}
}

// run starts workers, and one more worker for each extra token, and returns
// when ctx ends and every worker stopped.
func (l *load) run(ctx context.Context, workers int, extra []token) {
	var wg sync.WaitGroup
	for i := range workers + len(extra) {
		tok := l.tokens[i%len(l.tokens)]
		if i >= workers {
			tok = extra[i-workers]
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.worker(ctx, i, tok)
		}()
	}
	wg.Wait()
}

// The request mix, fixed and identical for both stacks: of every 10
// requests, 7 reads, 2 new writes and 1 re-send of an earlier write (the
// client did not get the answer and retries with the same key).
var mix = [10]opKind{opRead, opRead, opWrite, opRead, opRead, opResend, opRead, opWrite, opRead, opRead}

func (l *load) worker(ctx context.Context, i int, tok token) {
	var last *write
	next := time.Now()
	for n := 0; ; n++ {
		if ctx.Err() != nil {
			return
		}
		op := mix[(n+i)%len(mix)]
		switch op {
		case opRead:
			l.do(ctx, op, tok, nil, fmt.Sprintf("/items/%d", (n*7+i)%16))
		case opWrite:
			w := &write{
				id: fmt.Sprintf("s%d-w%d-%d", l.stack, i, n), key: idempotency.NewKey(),
				token: tok.raw, subject: tok.subject, phase: l.clock.phase(),
			}
			w.body, _ = json.Marshal(map[string]any{"write_id": w.id, "amount": 100 + n%50})
			l.mu.Lock()
			l.writes[w.id] = w
			l.order = append(l.order, w.id)
			l.mu.Unlock()
			last = w
			l.do(ctx, op, tok, w, "/orders")
		case opResend:
			if last == nil {
				l.do(ctx, opRead, tok, nil, "/items/1")
			} else {
				l.do(ctx, op, tok, last, "/orders")
			}
		}
		next = next.Add(l.interval)
		if d := time.Until(next); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		} else {
			next = time.Now()
		}
	}
}

// send sends one request and returns its status (0 on error) and its
// Holdfast-Degraded header.
func (l *load) send(ctx context.Context, tok token, w *write, path string) (int, string) {
	method, body := http.MethodGet, io.Reader(nil)
	if w != nil {
		method, body = http.MethodPost, bytes.NewReader(w.body)
	}
	req, err := http.NewRequestWithContext(ctx, method, l.url+path, body)
	if err != nil {
		return 0, ""
	}
	req.Header.Set("Authorization", "Bearer "+tok.raw)
	if w != nil {
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(idempotency.HeaderKey, w.key)
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return 0, ""
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
	return resp.StatusCode, resp.Header.Get(degrade.HeaderDegraded)
}

func (l *load) do(ctx context.Context, op opKind, tok token, w *write, path string) {
	start := time.Now()
	at, phase := l.clock.now()
	status, degraded := l.send(ctx, tok, w, path)
	if ctx.Err() != nil && status == 0 {
		return // the drill ended, not the service
	}
	r := result{stack: l.stack, at: at, phase: phase, op: op, status: status, degraded: degraded, latency: time.Since(start), subject: tok.subject}
	l.mu.Lock()
	if w != nil {
		r.writeID = w.id
		l.note(w, status)
	}
	l.results = append(l.results, r)
	l.mu.Unlock()
}

// note records what an answer says about a write. l.mu is held.
func note2xx(status int) bool { return status >= 200 && status < 300 }

func (l *load) note(w *write, status int) {
	if note2xx(status) {
		w.acked = true
	}
	switch {
	case status == http.StatusAccepted:
		w.queued = true
	case note2xx(status):
		w.queued = false
	}
}

// poll re-sends every write still answered 202, with its key, until it gets
// its final answer or ctx ends: what a client does with a 202's Location.
// It returns, for the revoked subject and for everyone else apart, how many
// were polled and how many got a 2xx final answer.
func (l *load) poll(ctx context.Context) (p pollResult) {
	l.mu.Lock()
	var pending []*write
	for _, id := range l.order {
		if w := l.writes[id]; w.queued {
			pending = append(pending, w)
		}
	}
	l.mu.Unlock()
	for _, w := range pending {
		for ctx.Err() == nil {
			status, _ := l.send(ctx, token{subject: w.subject, raw: w.token}, w, "/orders")
			if status != http.StatusAccepted && status != http.StatusConflict {
				l.mu.Lock()
				l.note(w, status)
				l.mu.Unlock()
				revoked := w.subject == revokedSubject
				switch {
				case revoked && status == http.StatusUnauthorized:
					p.revokedRefused++
				case !revoked && note2xx(status):
					p.confirmed++
				}
				break
			}
			t := time.NewTimer(100 * time.Millisecond)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}
	for _, w := range pending {
		if w.subject == revokedSubject {
			p.revokedQueued++
		} else {
			p.queued++
		}
	}
	return p
}

// pollResult is what poll found.
type pollResult struct {
	queued, confirmed             int // everyone but the revoked subject
	revokedQueued, revokedRefused int // the revoked subject: refused (401) at replay
}
