package idempotency

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/holdfast-go/holdfast/internal/httpx"
	"github.com/holdfast-go/holdfast/internal/problem"
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
// Idempotency-Key and answers 202 Accepted, to be run later by Replay: give
// http.HandlerFunc(x.Enqueue) to a gate that queues writes during an outage.
// The 202 carries Location (see Config.QueueLocation), Retry-After and a
// JSON body with the key. A request that already has a record is answered
// from it like Handler would: the stored response once Replay ran it, 202
// while it waits, 409 while it runs, 422 for another request under the same
// key.
//
// Enqueue computes the record key like Handler: with a Config.Scope that
// reads the verified caller, call Enqueue after authentication (a Scope that
// finds no caller makes it answer 500); the default scope, the caller's
// credentials, works in front of authentication too.
//
// Queued records are never evicted: in front of authentication anyone can
// fill the queue until the store refuses (503). Bound the store, and
// authenticate or rate-limit before the gate where you can.
//
// A queued request is stored with its headers (credentials included, so that
// Replay's handler authenticates it: secure the store accordingly), minus
// hop-by-hop headers. A request without a key, or with a method that is not
// guarded, is refused with 503 and Retry-After: it could not be polled or
// deduplicated, and the service cannot take it now.
func (x *Idempotency) Enqueue(w http.ResponseWriter, r *http.Request) {
	if !x.guards(r.Method) || len(r.Header[HeaderKey]) == 0 {
		// Not queueable: it could not be deduplicated or polled. The
		// service cannot take it now, so the answer is 503, not 400.
		problem.Write(w, problem.Problem{
			Type: "idempotency-not-queued", Status: http.StatusServiceUnavailable,
			Title:      "Request not queued",
			Detail:     "The service is degraded and queues only " + strings.Join(x.methods, ", ") + " requests that carry an Idempotency-Key. Retry later.",
			RetryAfter: x.cfg.RetryAfter,
		})
		return
	}
	in, ok := x.prepare(w, r)
	if !ok {
		return
	}
	req := Request{Method: r.Method, URL: r.URL.RequestURI(), Header: queuedHeader(r), Body: in.body}
	ctx, cancel := x.storeCtx(r.Context())
	rec, created, err := x.cfg.Store.Enqueue(ctx, in.storeKey, in.fingerprint, req, x.cfg.TTL)
	cancel()
	if err != nil {
		x.storeError(r, in.key, "enqueue", err)
		x.unavailable(w)
		return
	}
	if !created {
		x.answer(w, r, in.key, rec, in.fingerprint)
		return
	}
	x.accepted(w, r, in.key)
}

// HeaderKey is the Idempotency-Key request header.
const HeaderKey = httpx.HeaderIdempotencyKey

func queuedHeader(r *http.Request) http.Header {
	h := make(http.Header, len(r.Header)+1)
	for k, vs := range r.Header {
		if !hopByHop(k) {
			h[k] = vs
		}
	}
	if r.Host != "" {
		h["Host"] = []string{r.Host}
	}
	return h
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
// first, and stores their responses for the clients that poll. Run it when
// the service has recovered (e.g. from degrade's OnModeChange hook, or a
// ticker); several replicas may run it at once, each request runs once.
//
// handler is what serves the requests normally: include authentication, so
// that queued requests are checked like live ones. A Handler of this package
// in that chain lets the replayed request through.
//
// A 5xx or 429 response that is not stored (see Config.StoreStatus) puts
// the request back in its place and halts the replay with ErrReplayHalted:
// the service has not recovered. Any other response is stored, even one
// that Config.StoreStatus would release for a live request (408, 409, 425 by
// default): the queued request got its answer, and releasing it would make
// it halt every Replay until its TTL (anyone who can queue a request that
// conflicts could block the queue). A handler that panics or answers with a
// body over MaxResponseBytes gets a 500 stored in place of its response, so
// a poisoned request does not block the queue; one that answers 5xx every
// time (a recovery middleware turns panics into 500s) does, until its TTL:
// watch for ErrReplayHalted that persists. Replay returns the number of
// responses stored and the first error; it stops when ctx is done.
func (x *Idempotency) Replay(ctx context.Context, handler http.Handler) (n int, err error) {
	owner := x.newOwner()
	for {
		if ctx.Err() != nil {
			return n, context.Cause(ctx)
		}
		sctx, cancel := x.storeCtx(ctx)
		batch, err := x.cfg.Store.ClaimQueued(sctx, owner, x.cfg.Lease, replayBatch)
		cancel()
		if err != nil {
			return n, fmt.Errorf("idempotency: claiming queued requests: %w", err)
		}
		if len(batch) == 0 {
			return n, nil
		}
		for i, item := range batch {
			if i > 0 {
				// It waited while the ones before it ran: renew its lease
				// first, and skip it if another replica took it over.
				sctx, cancel := x.detachedCtx(ctx)
				err := x.cfg.Store.Extend(sctx, item.Key, owner, item.Record.Fence, x.cfg.Lease)
				cancel()
				if errors.Is(err, ErrNotOwner) {
					continue
				}
				if err != nil {
					x.releaseAll(ctx, batch[i:], owner)
					return n, fmt.Errorf("idempotency: renewing a queued request: %w", err)
				}
			}
			if ctx.Err() != nil {
				x.releaseAll(ctx, batch[i:], owner)
				return n, context.Cause(ctx)
			}
			stored, err := x.replayOne(ctx, handler, item, owner)
			if err != nil {
				x.releaseAll(ctx, batch[i+1:], owner)
				return n, err
			}
			if stored {
				n++
			}
		}
	}
}

// replayBatch is how many queued requests Replay claims at a time.
const replayBatch = 16

// releaseAll puts claimed, unrun requests back in their place.
func (x *Idempotency) releaseAll(ctx context.Context, items []Queued, owner string) {
	for _, item := range items {
		sctx, cancel := x.detachedCtx(ctx)
		_ = x.cfg.Store.Release(sctx, item.Key, owner, item.Record.Fence)
		cancel()
	}
}

func (x *Idempotency) replayOne(ctx context.Context, handler http.Handler, item Queued, owner string) (bool, error) {
	rec := item.Record
	if rec.Request == nil { // a broken store; release and move on
		return false, fmt.Errorf("idempotency: queued record without a request")
	}
	rctx := context.WithValue(ctx, replayingKey{}, item.Key)
	req, err := http.NewRequestWithContext(rctx, rec.Request.Method, rec.Request.URL, bytes.NewReader(rec.Request.Body))
	if err != nil {
		resp := problemResponse(http.StatusInternalServerError, "idempotency-replay-failed", "The queued request could not be rebuilt.")
		return x.completeReplay(ctx, item, owner, resp)
	}
	req.Header = rec.Request.Header.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	if host := req.Header.Get("Host"); host != "" {
		req.Host = host
		req.Header.Del("Host")
	}
	req.RequestURI = rec.Request.URL
	req.ContentLength = int64(len(rec.Request.Body))

	rw := &recorder{header: http.Header{}, max: x.cfg.MaxResponseBytes}
	in := &keyed{storeKey: item.Key}
	ext := x.extend(req, in, owner, rec.Fence)
	panicked := x.serveRecorded(handler, rw, req)
	if ext.stop() {
		x.lost(req, "", rw.status)
		return false, nil
	}
	var resp Response
	switch {
	case panicked:
		resp = problemResponse(http.StatusInternalServerError, "idempotency-replay-failed", "The queued request failed.")
	case rw.reason != "":
		resp = problemResponse(http.StatusInternalServerError, "idempotency-replay-failed", "The queued request's response could not be stored ("+rw.reason+").")
	default:
		status := rw.status
		if status == 0 {
			status = http.StatusOK
		}
		if !x.cfg.StoreStatus(status) && (status >= 500 || status == http.StatusTooManyRequests) {
			sctx, cancel := x.detachedCtx(ctx)
			err := x.cfg.Store.Release(sctx, item.Key, owner, rec.Fence)
			cancel()
			if err != nil && !errors.Is(err, ErrNotOwner) {
				return false, fmt.Errorf("idempotency: releasing a replayed request: %w", err)
			}
			return false, fmt.Errorf("%w: a queued request got status %d", ErrReplayHalted, status)
		}
		resp = Response{Status: status, Header: x.storedHeader(rw.header), Body: rw.buf.Bytes()}
	}
	return x.completeReplay(ctx, item, owner, resp)
}

func (x *Idempotency) completeReplay(ctx context.Context, item Queued, owner string, resp Response) (bool, error) {
	sctx, cancel := x.detachedCtx(ctx)
	err := x.cfg.Store.Complete(sctx, item.Key, owner, item.Record.Fence, resp, x.cfg.TTL)
	cancel()
	switch {
	case errors.Is(err, ErrNotOwner):
		return false, nil // someone took it over; theirs counts
	case err != nil:
		return false, fmt.Errorf("idempotency: storing a replayed response: %w", err)
	}
	return true, nil
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

func problemResponse(status int, typ, detail string) Response {
	rec := &recorder{header: http.Header{}, max: 1 << 20}
	problem.Write(rec, problem.Problem{Type: typ, Status: status, Detail: detail})
	return Response{Status: status, Header: rec.header, Body: rec.buf.Bytes()}
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
