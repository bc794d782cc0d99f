package idempotency

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/holdfast-go/holdfast/internal/caller"
	"github.com/holdfast-go/holdfast/internal/httpx"
	"github.com/holdfast-go/holdfast/internal/problem"
	"github.com/holdfast-go/holdfast/internal/recordcodec"
)

// ErrReplayHalted is returned by Replay when a replayed request got a 5xx
// or 429 response that is not stored (see Config.StoreStatus): the service
// has not recovered, the request went back to the queue in its place, and
// the requests behind it wait for the next Replay.
var ErrReplayHalted = errors.New("idempotency: replay halted")

// replayingKey marks the context of a request run by Replay with the record
// key Replay holds, so that a Handler in the replay chain lets it through.
type replayingKey struct{}

// Enqueue is an http.HandlerFunc that stores a guarded request under its
// Idempotency-Key and answers 202 Accepted, to be run later by a [Replayer]
// (or Replay): give http.HandlerFunc(x.Enqueue) to a gate that queues writes
// during an outage. The 202 carries Location (see Config.QueueLocation),
// Retry-After and a JSON body with the key. A request that already has a
// record is answered from it like Handler would: the stored response once it
// ran, 202 while it waits, 409 while it runs, 422 for another request under
// the same key.
//
// Call Enqueue after authentication: it records the authorization decision
// with the request (the verified caller that authfallback's Handler put in
// the context: issuer, subject, granted scopes, degraded reason), and the
// replay runs the request as that caller, so a token that expired before
// the service recovered does not turn an accepted write into a 401. The
// record is scoped like Handler's, by the caller: the same caller polling
// with a new token gets the write's outcome, another caller nothing of it.
//
// Credentials (Config.CredentialHeaders: Authorization, Proxy-Authorization,
// Cookie) are never stored in plaintext: stripped, or sealed with
// Config.Seal. A request that carries credentials, with no verified caller
// in its context and no Seal, is refused with 503 (its replay could not be
// authorized). Hop-by-hop headers are dropped.
//
// A 202 is as durable as the store: the memory store loses queued requests
// with the process; Redis keeps them across a restart only with persistence
// (appendonly yes; appendfsync always to lose none on a crash, everysec
// loses up to a second of them); PostgreSQL once committed. Queued records
// are never evicted: bound the store, and rate-limit before the gate.
//
// A request without a key, or with a method that is not guarded, is refused
// with 503 and Retry-After: it could not be polled or deduplicated, and the
// service cannot take it now.
func (x *Idempotency) Enqueue(w http.ResponseWriter, r *http.Request) {
	if !x.guards(r.Method) || len(r.Header[HeaderKey]) == 0 {
		// Not queueable: it could not be deduplicated or polled. The
		// service cannot take it now, so the answer is 503, not 400.
		x.notQueued(w, r, "The service is degraded and queues only "+strings.Join(x.methods, ", ")+" requests that carry an Idempotency-Key. Retry later.")
		return
	}
	in, ok := x.prepare(w, r)
	if !ok {
		return
	}
	req := Request{Method: r.Method, URL: r.URL.RequestURI(), Body: in.body}
	var creds http.Header
	req.Header, creds = x.queuedHeader(r)
	if c := caller.FromContext(r.Context()); c != nil {
		req.Caller = &Caller{Issuer: c.Issuer, Subject: c.Subject, Scopes: c.Scopes, Reason: c.Reason}
	}
	switch {
	case len(creds) == 0:
	case x.cfg.Seal != nil:
		req.Sealed = x.seal(creds, in.storeKey)
	case req.Caller == nil:
		if l := x.cfg.Logger; l != nil {
			l.Error("idempotency: a request with credentials and no verified caller cannot be queued without Config.Seal; is Enqueue behind authentication?", "method", r.Method, "path", r.URL.Path)
		}
		x.notQueued(w, r, "The service is degraded and cannot queue this request now. Retry later.")
		return
	}
	ctx, cancel := x.storeCtx(r.Context())
	rec, created, err := x.cfg.Store.Enqueue(ctx, in.storeKey, in.fingerprint, req, x.cfg.TTL)
	cancel()
	if err != nil {
		x.storeError(r, in.key, "", "enqueue", err)
		x.unavailable(w, r)
		return
	}
	if !created {
		x.answer(w, r, in, rec)
		return
	}
	x.outcome(OutcomeQueued, r, "", http.StatusAccepted)
	x.accepted(w, r, in.key)
}

func (x *Idempotency) notQueued(w http.ResponseWriter, r *http.Request, detail string) {
	x.problem(w, r, Problem{
		Type: ProblemNotQueued, Status: http.StatusServiceUnavailable,
		Title:      "Request not queued",
		Detail:     detail,
		RetryAfter: x.cfg.RetryAfter,
	})
}

// credential reports whether h (canonical) is a credential header.
func (x *Idempotency) credential(h string) bool {
	if x.cfg.CredentialHeaders == nil {
		switch h {
		case "Authorization", "Proxy-Authorization", "Cookie":
			return true
		}
		return false
	}
	for _, c := range x.cfg.CredentialHeaders {
		if http.CanonicalHeaderKey(c) == h {
			return true
		}
	}
	return false
}

// seal seals the credential headers for the record under storeKey: a
// random nonce, then the AEAD's ciphertext of their encoding, bound to the
// record key.
func (x *Idempotency) seal(creds http.Header, storeKey string) []byte {
	a := x.cfg.Seal
	nonce := make([]byte, a.NonceSize(), a.NonceSize()+a.Overhead()+256)
	_, _ = rand.Read(nonce)
	return a.Seal(nonce, nonce, recordcodec.EncodeHeader(creds), []byte(storeKey))
}

// unseal opens what seal sealed.
func (x *Idempotency) unseal(sealed []byte, storeKey string) (http.Header, error) {
	a := x.cfg.Seal
	if a == nil {
		return nil, errors.New("idempotency: sealed credentials and no Config.Seal")
	}
	if len(sealed) < a.NonceSize() {
		return nil, errors.New("idempotency: sealed credentials too short")
	}
	plain, err := a.Open(nil, sealed[:a.NonceSize()], sealed[a.NonceSize():], []byte(storeKey))
	if err != nil {
		return nil, fmt.Errorf("idempotency: opening sealed credentials: %w", err)
	}
	return recordcodec.DecodeHeader(plain)
}

// HeaderKey is the Idempotency-Key request header.
const HeaderKey = httpx.HeaderIdempotencyKey

// queuedHeader returns the headers stored with a queued request, and its
// credentials apart.
func (x *Idempotency) queuedHeader(r *http.Request) (h, creds http.Header) {
	h = make(http.Header, len(r.Header)+1)
	for k, vs := range r.Header {
		switch {
		case hopByHop(k):
		case x.credential(k):
			if creds == nil {
				creds = make(http.Header, 2)
			}
			creds[k] = vs
		default:
			h[k] = vs
		}
	}
	if r.Host != "" {
		h["Host"] = []string{r.Host}
	}
	return h, creds
}

func hopByHop(h string) bool {
	switch h {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length":
		return true
	}
	return false
}

// accepted answers 202 for a queued request.
func (x *Idempotency) accepted(w http.ResponseWriter, r *http.Request, key string) {
	loc := r.URL.RequestURI()
	if strings.HasPrefix(loc, "//") {
		// A path that starts with "//" reads as another host's URL
		// ("//evil.example/x"); "/." keeps it a path on this host.
		loc = "/." + loc
	}
	if x.cfg.QueueLocation != nil {
		loc = x.cfg.QueueLocation(r, key)
	}
	body, _ := json.Marshal(struct {
		Status string `json:"status"`
		Key    string `json:"idempotency_key"`
		Detail string `json:"detail"`
	}{"queued", key, "The request is queued and runs when the service recovers. Send it again with the same Idempotency-Key to get its response."})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Location", loc)
	h.Set("Retry-After", problem.RetryAfterValue(x.cfg.RetryAfter))
	h.Set(HeaderKey, formatKey(key))
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write(append(body, '\n'))
}

// Replay runs the queued requests through handler one at a time, oldest
// first, and stores their responses for the clients that poll: one drain,
// where a [Replayer] runs them on a trigger and a timer, with bounded
// concurrency and an attempt counter. Several replicas may run it at once,
// each request runs once.
//
// handler is what serves the requests normally, without the authentication
// in front: each request runs with the caller recorded when it was queued
// in its context (and its sealed credentials restored, with Config.Seal),
// read by the application through authfallback's context (internal/caller)
// like a live request's (see [CallerFromContext]). A Handler of this
// package in that chain lets the replayed request through. A service that
// scopes records with Config.Scope (its own authentication) runs that
// authentication in handler, with Config.Seal so that the credentials are
// there to check.
//
// A 5xx or 429 response that is not stored (see Config.StoreStatus) puts
// the request back in its place and halts the replay with ErrReplayHalted:
// the service has not recovered. Any other response is stored, even one
// that Config.StoreStatus would release for a live request (408, 409, 425 by
// default): the queued request got its answer. A handler that panics or
// answers with a body over MaxResponseBytes gets a ProblemReplayFailed 500
// stored in place of its response, so a poisoned request does not block the
// queue. Replay returns the number of responses stored and the first error;
// it stops when ctx is done (a request that runs finishes first).
func (x *Idempotency) Replay(ctx context.Context, handler http.Handler) (n int, err error) {
	d := drain{x: x, handler: handler, owner: x.newOwner(), batch: replayBatch}
	return d.run(ctx)
}

// replayBatch is how many queued requests Replay claims at a time.
const replayBatch = 16

// drain is one pass over the queue.
type drain struct {
	x       *Idempotency
	handler http.Handler
	owner   string
	batch   int  // claimed at a time
	workers int  // concurrent replays; 0 or 1: one at a time
	trial   bool // one request; failures do not count
	// maxAttempts, if positive, counts failures (Requeue) and stores a
	// ProblemReplayFailed after that many.
	maxAttempts int
	onReplayed  func(ReplayEvent)
	onFailed    func(ReplayEvent)
	authorize   func(*http.Request, *Caller) error
	replayed    atomic.Int64 // responses of the handler stored (not failures)
}

// replayResult is the fate of one replayed request.
type replayResult struct {
	stored bool
	halt   error
}

func (d *drain) run(ctx context.Context) (n int, err error) {
	x := d.x
	for {
		if ctx.Err() != nil {
			return n, context.Cause(ctx)
		}
		sctx, cancel := x.storeCtx(ctx)
		batch, err := x.cfg.Store.ClaimQueued(sctx, d.owner, x.cfg.Lease, d.batch)
		cancel()
		if err != nil {
			return n, fmt.Errorf("idempotency: claiming queued requests: %w", err)
		}
		if len(batch) == 0 {
			return n, nil
		}
		if d.trial && len(batch) > 1 {
			// A trial runs the last one it claimed: after failed trials
			// it looks past the head, so that one request that always
			// fails cannot hide a recovery. The others keep their place.
			x.releaseAll(ctx, batch[:len(batch)-1], d.owner)
			batch = batch[len(batch)-1:]
		}
		if d.workers > 1 {
			stored, err := d.parallel(ctx, batch)
			n += stored
			if err != nil || d.trial {
				return n, err
			}
			continue
		}
		for i, item := range batch {
			if i > 0 {
				// It waited while the ones before it ran: renew its lease
				// first, and skip it if another replica took it over.
				sctx, cancel := x.detachedCtx(ctx)
				err := x.cfg.Store.Extend(sctx, item.Key, d.owner, item.Record.Fence, x.cfg.Lease)
				cancel()
				if errors.Is(err, ErrNotOwner) {
					continue
				}
				if err != nil {
					x.releaseAll(ctx, batch[i:], d.owner)
					return n, fmt.Errorf("idempotency: renewing a queued request: %w", err)
				}
			}
			if ctx.Err() != nil {
				x.releaseAll(ctx, batch[i:], d.owner)
				return n, context.Cause(ctx)
			}
			res := d.one(ctx, item)
			if res.stored {
				n++
			}
			if res.halt != nil {
				x.releaseAll(ctx, batch[i+1:], d.owner)
				return n, res.halt
			}
		}
		if d.trial {
			return n, nil
		}
	}
}

// parallel replays a claimed batch with d.workers at a time.
func (d *drain) parallel(ctx context.Context, batch []Queued) (int, error) {
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		stored int
		first  error
		sem    = make(chan struct{}, d.workers)
	)
	for _, item := range batch {
		sem <- struct{}{}
		mu.Lock()
		halted := first != nil
		mu.Unlock()
		if halted || ctx.Err() != nil {
			<-sem
			d.x.releaseAll(ctx, []Queued{item}, d.owner)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res := d.one(ctx, item)
			mu.Lock()
			if res.stored {
				stored++
			}
			if res.halt != nil && first == nil {
				first = res.halt
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = context.Cause(ctx)
	}
	return stored, first
}

// releaseAll puts claimed, unrun requests back in their place.
func (x *Idempotency) releaseAll(ctx context.Context, items []Queued, owner string) {
	for _, item := range items {
		sctx, cancel := x.detachedCtx(ctx)
		_ = x.cfg.Store.Release(sctx, item.Key, owner, item.Record.Fence)
		cancel()
	}
}

// one replays one claimed request.
func (d *drain) one(ctx context.Context, item Queued) replayResult {
	x := d.x
	rec := item.Record
	q := rec.Request
	if q == nil { // a broken store
		return replayResult{halt: fmt.Errorf("idempotency: queued record without a request")}
	}
	ev := ReplayEvent{Method: q.Method, URL: q.URL, Attempts: rec.Attempts, Trial: d.trial}
	// The handler's context is not cancelled with ctx: a write stopped
	// half-way is worse than a Close that waits for it.
	rctx := context.WithValue(context.WithoutCancel(ctx), replayingKey{}, item.Key)
	if c := q.Caller; c != nil {
		rctx = caller.NewContext(rctx, caller.New(c.Issuer, c.Subject, c.Scopes, c.Reason, nil))
	}
	req, err := http.NewRequestWithContext(rctx, q.Method, q.URL, bytes.NewReader(q.Body))
	if err != nil {
		return d.fail(ctx, item, ev, "The queued request could not be rebuilt.")
	}
	req.Header = q.Header.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	if host := req.Header.Get("Host"); host != "" {
		req.Host = host
		req.Header.Del("Host")
	}
	if q.Sealed != nil {
		creds, err := x.unseal(q.Sealed, item.Key)
		if err != nil {
			// Run it without them: the recorded caller, if any, stands.
			if l := x.cfg.Logger; l != nil {
				l.Warn("idempotency: sealed credentials of a queued request could not be opened", "err", err, "method", q.Method)
			}
		}
		for k, vs := range creds {
			req.Header[k] = vs
		}
	}
	req.RequestURI = q.URL
	req.ContentLength = int64(len(q.Body))
	if d.authorize != nil {
		if err := d.authorize(req, q.Caller); err != nil {
			if l := x.cfg.Logger; l != nil {
				l.Warn("idempotency: a queued request was refused at replay", "err", err, "method", q.Method)
			}
			return d.refuse(ctx, item, ev)
		}
	}

	rw := &recorder{header: http.Header{}, max: x.cfg.MaxResponseBytes}
	in := &keyed{storeKey: item.Key}
	ext := x.extend(req, in, d.owner, rec.Fence)
	panicked := x.serveRecorded(d.handler, rw, req)
	if ext.isLost() {
		ext.stop()
		x.lost(req, "", rw.status)
		return replayResult{}
	}
	defer ext.stop()
	status := rw.status
	if status == 0 {
		status = http.StatusOK
	}
	ev.Status = status
	switch {
	case panicked:
		ev.Status = 0
		return d.fail(ctx, item, ev, "The queued request failed.")
	case rw.reason != "":
		return d.fail(ctx, item, ev, "The queued request's response could not be stored ("+rw.reason+").")
	case !x.cfg.StoreStatus(status) && (status >= 500 || status == http.StatusTooManyRequests):
		halt := fmt.Errorf("%w: a queued request got status %d", ErrReplayHalted, status)
		if d.maxAttempts > 0 && !d.trial {
			if rec.Attempts+1 >= d.maxAttempts {
				ev.Attempts = rec.Attempts + 1
				res := d.fail(ctx, item, ev, "The queued request failed "+strconv.Itoa(ev.Attempts)+" times; it was not run to completion. Send it again with a new Idempotency-Key.")
				res.halt = halt
				return res
			}
			sctx, cancel := x.detachedCtx(ctx)
			err := x.cfg.Store.Requeue(sctx, item.Key, d.owner, rec.Fence)
			cancel()
			if err != nil && !errors.Is(err, ErrNotOwner) {
				return replayResult{halt: fmt.Errorf("idempotency: requeueing a replayed request: %w", err)}
			}
			return replayResult{halt: halt}
		}
		sctx, cancel := x.detachedCtx(ctx)
		err := x.cfg.Store.Release(sctx, item.Key, d.owner, rec.Fence)
		cancel()
		if err != nil && !errors.Is(err, ErrNotOwner) {
			return replayResult{halt: fmt.Errorf("idempotency: releasing a replayed request: %w", err)}
		}
		return replayResult{halt: halt}
	}
	header, _ := x.storedHeader(rw.header)
	resp := Response{Status: status, Header: header, Body: rw.buf.Bytes()}
	stored, err := x.completeReplay(ctx, req, item, d.owner, resp, ext)
	if stored {
		d.replayed.Add(1)
		x.replayOutcome(OutcomeReplayed, req, ev)
		if d.onReplayed != nil {
			d.onReplayed(ev)
		}
	}
	return replayResult{stored: stored, halt: err}
}

// fail stores a ProblemReplayFailed as the request's outcome.
func (d *drain) fail(ctx context.Context, item Queued, ev ReplayEvent, detail string) replayResult {
	return d.final(ctx, item, ev, failedResponse(detail, ev.Attempts, ev.Status))
}

// refuse stores a ProblemReplayRefused as the request's outcome.
func (d *drain) refuse(ctx context.Context, item Queued, ev ReplayEvent) replayResult {
	rec := &recorder{header: http.Header{}, max: 1 << 20}
	problem.Write(rec, problem.Problem{Type: ProblemReplayRefused, Status: http.StatusForbidden,
		Title:  "Queued request refused",
		Detail: "The caller's authorization no longer holds; the queued request did not run."})
	return d.final(ctx, item, ev, Response{Status: http.StatusForbidden, Header: rec.header, Body: rec.buf.Bytes()})
}

// final stores resp as the queued request's final outcome, one it did not
// run to (failed or refused), and reports it as OutcomeFailed and to
// OnFailed with resp's status.
func (d *drain) final(ctx context.Context, item Queued, ev ReplayEvent, resp Response) replayResult {
	u, err := url.ParseRequestURI(ev.URL)
	if err != nil {
		u = &url.URL{}
	}
	req := &http.Request{Method: ev.Method, URL: u, Header: http.Header{}}
	stored, err := d.x.completeReplay(ctx, req, item, d.owner, resp, nil)
	if stored {
		ev.Status = resp.Status
		d.x.replayOutcome(OutcomeFailed, req, ev)
		if d.onFailed != nil {
			d.onFailed(ev)
		}
	}
	return replayResult{stored: stored, halt: err}
}

func (x *Idempotency) replayOutcome(outcome string, r *http.Request, ev ReplayEvent) {
	if f := x.cfg.OnOutcome; f != nil {
		f(OutcomeEvent{Request: r, Outcome: outcome, Method: r.Method, Route: x.route(r), Status: ev.Status, Attempts: ev.Attempts})
	}
}

// completeReplay stores a replay's outcome, retrying a store failure while
// the lease holds (the request ran: it must not run again).
func (x *Idempotency) completeReplay(ctx context.Context, r *http.Request, item Queued, owner string, resp Response, ext *extender) (bool, error) {
	sctx, cancel := x.detachedCtx(ctx)
	err := x.cfg.Store.Complete(sctx, item.Key, owner, item.Record.Fence, resp, x.cfg.TTL)
	cancel()
	switch {
	case errors.Is(err, ErrNotOwner):
		return false, nil // someone took it over; theirs counts
	case err != nil:
		resp.Body = bytes.Clone(resp.Body)
		if x.completeRetry(r, "", x.route(r), item.Key, owner, item.Record.Fence, resp, ext) {
			return true, nil
		}
		return false, fmt.Errorf("idempotency: storing a replayed response: %w", err)
	}
	return true, nil
}

// failedResponse is the stored outcome of a queued request that failed for
// good.
func failedResponse(detail string, attempts, lastStatus int) Response {
	ext := map[string]any{"attempts": attempts}
	if lastStatus != 0 {
		ext["last_status"] = lastStatus
	}
	rec := &recorder{header: http.Header{}, max: 1 << 20}
	problem.Write(rec, problem.Problem{Type: ProblemReplayFailed, Status: http.StatusInternalServerError,
		Title: "Queued request failed", Detail: detail, Extensions: ext})
	return Response{Status: http.StatusInternalServerError, Header: rec.header, Body: rec.buf.Bytes()}
}

func (x *Idempotency) serveRecorded(h http.Handler, w http.ResponseWriter, r *http.Request) (panicked bool) {
	defer func() {
		if p := recover(); p != nil {
			panicked = true
			if l := x.cfg.Logger; l != nil {
				l.Error("idempotency: a replayed request panicked", "panic", fmt.Sprint(p), "method", r.Method, "path", r.URL.Path)
			}
		}
	}()
	h.ServeHTTP(w, r)
	return false
}

// recorder is the ResponseWriter of a replayed request.
type recorder struct {
	header http.Header
	status int
	buf    bytes.Buffer
	max    int
	reason string
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 {
		r.status = code
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if r.buf.Len()+len(p) > r.max {
		r.reason = ReasonOversize
		return len(p), nil
	}
	return r.buf.Write(p)
}

// Flush does nothing: a replayed response has no client to stream to, and
// is stored whole if it fits.
func (r *recorder) Flush() {}
