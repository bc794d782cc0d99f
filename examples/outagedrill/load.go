package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/examples/internal/stack"
	"github.com/holdfast-go/holdfast/idempotency"
)

// opKind is what a request of the load is.
type opKind int

const (
	opRead   opKind = iota // GET /items/{id}
	opWrite                // POST /orders: a new logical write, with a new Idempotency-Key
	opResend               // POST /orders again, same key and body: its first answer never came, or was a 5xx or 401
	opPoll                 // POST /orders again, same key and body: its answer was 202, the client fetches the final one
)

func (o opKind) String() string { return [...]string{"read", "write", "resend", "poll"}[o] }

// credKind is the credential a request carried.
type credKind int

const (
	credIdP     credKind = iota // the IdP's access token (perhaps expired)
	credOffline                 // an offline token from the service's exchange endpoint
)

// result is one request of the load, as its client saw it.
type result struct {
	at       time.Duration // sent, since the drill started
	op       opKind
	status   int    // 0: no answer (transport error or client timeout)
	degraded string // the Holdfast-Degraded header
	problem  string // the problem type slug of an error answer
	detail   string // the problem detail of a 401, cut short
	replica  string // the Drill-Replica header: which replica answered
	latency  time.Duration
	session  int
	cred     credKind
	tokenExp time.Time // exp of the IdP token behind the credential
	writeID  string
}

func (r result) ok() bool { return r.status >= 200 && r.status < 300 }

// isDegraded: a 2xx that holdfast marked as served in a fallback (stale,
// queued, degraded authentication, degraded mode).
func (r result) isDegraded() bool {
	return r.ok() && (r.status == http.StatusAccepted || r.degraded != "")
}

// write is a logical write as its client knows it.
type write struct {
	id, key string
	session int
	body    []byte
	sentAt  time.Duration
	acked   bool // some answer was 2xx (202 included)
	last    int  // the last answer's status (0: none)
	sends   int
	next    time.Time // when the client sends it again
	// needToken: the last answer was 401; send again only with a new
	// IdP token.
	needToken bool
	tokenGen  int
	// queuedThen401: a 202 was followed by a 401 (the queued write was
	// refused when replayed).
	queuedThen401 bool
}

// settled: the client holds a final answer: a 2xx other than 202, or a 4xx
// other than 409 and 429 (a 401 is final too, though the client sends the
// write again once it has a new token).
func (w *write) settled() bool {
	switch {
	case w.last == 0, w.last >= 500, w.last == http.StatusAccepted,
		w.last == http.StatusConflict, w.last == http.StatusTooManyRequests:
		return false
	}
	return true
}

// session is one client: a subject with its tokens, driving one stack.
type session struct {
	id      int
	subject string
	offline bool // exchanges its token for an offline token when the IdP is down
	revoked bool // the subject revoked during the outage
}

// load drives one stack through its proxy.
type load struct {
	stack    int
	url      string // the proxy
	idp      *idpFront
	client   *http.Client
	interval time.Duration
	tl       *timeline

	creds map[int]*creds // per session; each used by its session's goroutine only

	mu      sync.Mutex
	results []result
	writes  map[string]*write
	order   []string
}

func newLoad(stack int, proxyURL string, idp *idpFront, interval time.Duration, tl *timeline) *load {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	return &load{
		stack: stack, url: proxyURL, idp: idp, interval: interval, tl: tl,
		client: &http.Client{Transport: tr, Timeout: 5 * time.Second},
		writes: make(map[string]*write), creds: make(map[int]*creds),
	}
}

// creds is a session's credentials.
type creds struct {
	idp       string
	exp       time.Time // of idp
	gen       int       // counts the IdP tokens obtained
	offline   string
	offExp    time.Time
	lastTry   time.Time // last refresh attempt
	exchanged bool      // tried the exchange for the current IdP token
	refuse    bool      // the last answer was a 401: refresh now, as an OAuth client does
	// useOffline: the service refused the current IdP token (401, or 503
	// without keys to verify it) while the offline token was valid: send
	// the offline token from now on, until a new IdP token.
	useOffline bool
}

// expiryMargin is how long before its expiry a client stops sending an
// offline token, as golang.org/x/oauth2 treats a token as expired a little
// before its Expiry (its expiryDelta, 10 s, scaled to the drill): a token
// sent at the last instant arrives expired. The session then sends its IdP
// token, in its grace window; an offline token has none (it is never
// extended).
const expiryMargin = time.Second

// bearer is the credential the session sends: its IdP token, or its
// offline token once the service refused the IdP token. An offline token
// never outlives the token it was exchanged for and is accepted only by a
// replica in fallback mode, so it is the fallback credential, not the
// first: sent first, it would be refused by a replica that has not yet
// noticed the outage (each notices on its own refresh schedule) while the
// IdP token it stands for is still accepted there.
func (c *creds) bearer(now time.Time) (string, credKind) {
	if c.useOffline && c.offline != "" && now.Add(expiryMargin).Before(c.offExp) {
		return c.offline, credOffline
	}
	return c.idp, credIdP
}

// run drives the sessions until ctx ends.
func (l *load) run(ctx context.Context, sessions []session) {
	for _, s := range sessions {
		l.creds[s.id] = &creds{}
	}
	var wg sync.WaitGroup
	for _, s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.session(ctx, s)
		}()
	}
	wg.Wait()
}

// refresh gets a new IdP token for the session, as an OAuth client does at
// half its token's life; an offline client whose refresh fails exchanges
// its token (still valid) for an offline token.
func (l *load) refresh(ctx context.Context, s session, c *creds) {
	now := time.Now()
	half := l.tl.tokenTTL / 2
	if c.idp != "" && now.Before(c.exp.Add(-half)) && !c.refuse {
		return
	}
	if now.Sub(c.lastTry) < 500*time.Millisecond {
		return
	}
	c.lastTry = now
	tok, exp, err := l.idp.token(ctx, s.subject)
	if err == nil {
		c.idp, c.exp, c.gen = tok, exp, c.gen+1
		c.offline, c.exchanged, c.refuse, c.useOffline = "", false, false, false
		return
	}
	if s.offline && !c.exchanged && c.idp != "" && now.Before(c.exp) {
		c.exchanged = true
		if tok, exp, err := l.exchange(ctx, c.idp); err == nil {
			c.offline, c.offExp = tok, exp
		}
	}
}

// exchange trades an IdP token for an offline token at the service.
func (l *load) exchange(ctx context.Context, raw string) (string, time.Time, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.url+stack.OfflineTokenPath, strings.NewReader(url.Values{"scope": {"read write"}}.Encode()))
	if err != nil {
		return "", time.Time{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+raw)
	resp, err := l.client.Do(req)
	if err != nil {
		return "", time.Time{}, err
	}
	defer resp.Body.Close()
	var v struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 16<<10)).Decode(&v) != nil || v.AccessToken == "" {
		return "", time.Time{}, fmt.Errorf("exchange answered %d", resp.StatusCode)
	}
	exp, err := tokenExp(v.AccessToken)
	if err != nil {
		return "", time.Time{}, err
	}
	return v.AccessToken, exp, nil
}

func (l *load) session(ctx context.Context, s session) {
	c := l.creds[s.id]
	next := time.Now()
	for n := 0; ctx.Err() == nil; n++ {
		l.refresh(ctx, s, c)
		// At most one request in three is a re-send or a poll, so a client
		// with many writes pending still does its other work.
		var w *write
		if n%3 == 0 {
			w = l.due(s.id, c.gen)
		}
		if w != nil {
			op := opResend
			if w.last == http.StatusAccepted || w.last == http.StatusConflict {
				op = opPoll
			}
			l.do(ctx, op, s, c, w, "/orders")
		} else if l.tl.writeOnly() || n%10 == 2 || n%10 == 5 || n%10 == 8 {
			w := &write{id: fmt.Sprintf("s%d-%s-%d", l.stack, s.subject, n), key: idempotency.NewKey(), session: s.id}
			w.body, _ = json.Marshal(map[string]any{"write_id": w.id, "amount": 100 + n%50})
			w.sentAt = l.tl.since()
			l.mu.Lock()
			l.writes[w.id] = w
			l.order = append(l.order, w.id)
			l.mu.Unlock()
			l.do(ctx, opWrite, s, c, w, "/orders")
		} else {
			l.do(ctx, opRead, s, c, nil, fmt.Sprintf("/items/%d", (n*7+s.id)%16))
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

// due returns the session's oldest write that its client sends again now:
// unanswered, 5xx or 401 (after a new token) every second, 202 and 409
// polled every second.
func (l *load) due(sid, gen int) *write {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range l.order {
		w := l.writes[id]
		if w.session != sid || now.Before(w.next) {
			continue
		}
		if !w.settled() || w.needToken && w.tokenGen != gen {
			return w
		}
	}
	return nil
}

// send sends one request and describes its answer.
func (l *load) send(ctx context.Context, bearer string, w *write, path string) result {
	method, body := http.MethodGet, io.Reader(nil)
	if w != nil {
		method, body = http.MethodPost, bytes.NewReader(w.body)
	}
	var r result
	req, err := http.NewRequestWithContext(ctx, method, l.url+path, body)
	if err != nil {
		return r
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	if w != nil {
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(idempotency.HeaderKey, w.key)
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return r
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
	r.status, r.degraded, r.replica = resp.StatusCode, resp.Header.Get(degrade.HeaderDegraded), resp.Header.Get(headerReplica)
	if r.status >= 400 {
		var p struct {
			Type   string `json:"type"`
			Detail string `json:"detail"`
		}
		if json.Unmarshal(b, &p) == nil {
			r.problem = p.Type[strings.LastIndexByte(p.Type, '/')+1:]
			if r.status == http.StatusUnauthorized {
				r.detail = p.Detail
			}
		}
	}
	return r
}

func (l *load) do(ctx context.Context, op opKind, s session, c *creds, w *write, path string) {
	start := time.Now()
	at := l.tl.since()
	bearer, kind := c.bearer(start)
	r := l.send(ctx, bearer, w, path)
	if ctx.Err() != nil && r.status == 0 {
		return // the drill ended, not the service
	}
	r.at, r.op, r.latency, r.session, r.cred, r.tokenExp = at, op, time.Since(start), s.id, kind, c.exp
	c.refuse = r.status == http.StatusUnauthorized
	if kind == credIdP && (r.status == http.StatusUnauthorized || r.problem == "authentication-unavailable") {
		c.useOffline = true
	}
	l.mu.Lock()
	if w != nil {
		if w.last == http.StatusAccepted && r.status == http.StatusUnauthorized {
			w.queuedThen401 = true
		}
		r.writeID = w.id
		w.sends++
		w.last = r.status
		if r.ok() {
			w.acked = true
		}
		w.needToken = r.status == http.StatusUnauthorized
		w.tokenGen = c.gen
		w.next = time.Now().Add(time.Second)
	}
	l.results = append(l.results, r)
	l.mu.Unlock()
}

// settle sends every unsettled write again, with its key and the session's
// credential, until each has a final answer or ctx ends: the clients
// collecting the final answers of their 202s after the load stopped. Each
// session polls each of its writes at most once a second, as during the
// load, but does nothing else.
func (l *load) settle(ctx context.Context, sessions []session) {
	var wg sync.WaitGroup
	for _, s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := l.creds[s.id]
			for ctx.Err() == nil {
				// After a 401 the client refreshes first (once the refresh
				// rate limit allows), then sends its refused writes again.
				if c.refuse {
					if d := time.Until(c.lastTry.Add(500 * time.Millisecond)); d > 0 {
						time.Sleep(d)
					}
				}
				l.refresh(ctx, s, c)
				if l.unsettledOf(s.id, c.gen) == 0 {
					return
				}
				for w := l.due(s.id, c.gen); w != nil && ctx.Err() == nil; w = l.due(s.id, c.gen) {
					l.refresh(ctx, s, c) // a long sweep outlives a token
					op := opResend
					if w.last == http.StatusAccepted || w.last == http.StatusConflict {
						op = opPoll
					}
					l.do(context.WithoutCancel(ctx), op, s, c, w, "/orders")
				}
				t := time.NewTimer(100 * time.Millisecond)
				select {
				case <-ctx.Done():
				case <-t.C:
				}
				t.Stop()
			}
		}()
	}
	wg.Wait()
}

// unsettledOf counts the writes of session sid its client would still send.
func (l *load) unsettledOf(sid, gen int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, w := range l.writes {
		if w.session == sid && (!w.settled() || w.needToken && w.tokenGen != gen) {
			n++
		}
	}
	return n
}

func (l *load) unsettled() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, w := range l.writes {
		if !w.settled() {
			n++
		}
	}
	return n
}
