package idempotency

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/holdfast-go/holdfast/internal/caller"
)

// HeaderReplayed marks a response replayed from the store.
const HeaderReplayed = "Idempotent-Replayed"

// Reasons carried by an Event.
const (
	// ReasonInFlight: a duplicate arrived while the first request ran (409).
	ReasonInFlight = "in-flight"
	// ReasonMismatch: the key was reused with another request (422).
	ReasonMismatch = "mismatch"
	// ReasonStatus: the response's status is not stored (see Config.StoreStatus).
	ReasonStatus = "status"
	// ReasonPanic: the handler panicked.
	ReasonPanic = "panic"
	// ReasonStreaming: the handler flushed; a streamed response is not stored.
	ReasonStreaming = "streaming"
	// ReasonOversize: the response exceeded Config.MaxResponseBytes.
	ReasonOversize = "oversize"
	// ReasonHijacked: the handler took over the connection.
	ReasonHijacked = "hijacked"
	// ReasonLeaseLost: the lease could not be kept; another request may have
	// taken the key over.
	ReasonLeaseLost = "lease-lost"
)

// Event describes what the handler did with a keyed request. Hooks receive
// it by value.
type Event struct {
	// Request is the client's request. Hooks must not read its body.
	Request *http.Request
	// Key is the client's Idempotency-Key, unquoted.
	Key string
	// Reason is one of the Reason constants, where it applies.
	Reason string
	// Status is the status of the response replayed, or released.
	Status int
	// Err is the store's error, for OnStoreError.
	Err error
}

// Config configures an Idempotency. Only Store is required.
type Config struct {
	// Store keeps the records. It must not be nil.
	Store Store

	// Methods are the guarded request methods. If nil, POST and PATCH.
	// Requests with other methods pass through untouched.
	Methods []string

	// RequireKey makes a guarded request without an Idempotency-Key a 400.
	// If false, such requests pass through unguarded.
	RequireKey bool

	// Scope returns the caller's identity: records are kept per scope, so no
	// caller can replay another's response. A request for which Scope
	// returns "" is refused with 500: a misordered middleware chain must not
	// make every caller share one scope. Set it when the service
	// authenticates otherwise than with authfallback (the tenant and
	// subject, say), and put this handler behind authentication.
	//
	// If nil, the scope is the verified caller that authfallback's Handler
	// put in the request context: its issuer and subject, whatever token it
	// presented, so a client that refreshed its token between two attempts
	// gets its record replayed, and two subjects never share a record. When
	// no verified caller is known, the scope falls back to the caller's
	// credentials: the Authorization and Cookie header values (hashed into
	// the record key, never stored); a refreshed token then gets a new scope.
	// Requests without either share the anonymous scope: a service whose
	// callers authenticate otherwise (an API key header, a client
	// certificate) must set Scope.
	Scope func(*http.Request) string

	// Route names the operation, one part of the record key. If nil, the
	// request's escaped URL path. The fingerprint always includes the path
	// and query, whatever Route returns.
	Route func(*http.Request) string

	// TTL is how long a completed response (or a queued request) is kept.
	// If zero, 24 hours.
	TTL time.Duration

	// Lease is the in-flight claim's lease; it is renewed every third of it
	// while the handler runs, so a handler may run longer as long as the
	// store answers. If zero, 60 seconds.
	Lease time.Duration

	// MaxRequestBytes bounds the body of a keyed request, read to compute
	// its fingerprint (and stored by Enqueue). A larger body is refused with
	// 413 rather than passed through unguarded. If zero, 1 MiB. Memory for
	// the body grows as its bytes arrive: an announced Content-Length is
	// checked against the bound, never allocated ahead.
	MaxRequestBytes int64

	// MaxResponseBytes bounds the stored response body. A larger response
	// is passed through to the client and the key is released (never half
	// stored). If zero, 1 MiB.
	MaxResponseBytes int

	// StoreStatus reports whether a response with status is stored and
	// replayed. A response that is not stored releases the key, so the
	// client may retry with it. If nil, every status is stored except 408,
	// 409, 425, 429 and 5xx: those say "try again", not "done".
	StoreStatus func(status int) bool

	// StoreHeaders are the response headers stored and replayed. If nil:
	// Content-Type, Content-Encoding, Content-Language, Content-Disposition,
	// Content-Location, Location, ETag, Last-Modified, Cache-Control,
	// Expires, Link, Vary and Preference-Applied. Set-Cookie, hop-by-hop
	// headers and Content-Length are never stored, whatever this says.
	StoreHeaders []string

	// FailOpen runs guarded requests unguarded when the store fails. If
	// false, they are refused with 503 and Retry-After: a duplicate payment
	// is worse than an error the client retries.
	FailOpen bool

	// StoreTimeout bounds each store call. If zero, 5 seconds.
	StoreTimeout time.Duration

	// RetryAfter is the Retry-After of 409 (in flight), 503 (store down) and
	// 202 (queued). If zero, 1 second.
	RetryAfter time.Duration

	// QueueLocation returns the Location of a 202 Accepted answer, where the
	// client learns the outcome of a queued request. If nil, the request's
	// own URI: the client re-sends the same request with the same key, and
	// gets 202 until the request ran, then its response.
	QueueLocation func(r *http.Request, key string) string

	// Seal, if set, seals the credential headers of a queued request
	// (CredentialHeaders) with this AEAD, under a fresh random nonce and the
	// record key as additional data, so that Replay can give them back to the
	// handler (to forward a token downstream, say). If nil, they are
	// stripped: a queued request keeps the authorization decision (the
	// verified caller), never its credentials. Either way they live no
	// longer than the queued request itself, which a completion deletes.
	Seal cipher.AEAD

	// CredentialHeaders are the request headers that Enqueue never stores
	// in plaintext (see Seal). If nil, Authorization, Proxy-Authorization
	// and Cookie.
	CredentialHeaders []string

	// WriteProblem writes the error responses of the handler and Enqueue
	// (p.Type is one of the Problem constants, p.Status its status). If
	// nil, p is written as RFC 9457 application/problem+json.
	WriteProblem func(w http.ResponseWriter, r *http.Request, p Problem)

	// Hooks. Each may be nil, may be called concurrently, and must not
	// block.

	// OnOutcome is called for every decision on a keyed request: first,
	// replay, conflict, mismatch, queued, store-error (and, from a
	// Replayer, replayed and failed). Unset, it costs nothing.
	OnOutcome func(OutcomeEvent)

	// OnReplay is called when a stored response is replayed.
	OnReplay func(Event)
	// OnConflict is called for a 409 (ReasonInFlight) or a 422
	// (ReasonMismatch).
	OnConflict func(Event)
	// OnRelease is called when a claim is released without storing a
	// response, with the reason (status, panic, streaming, oversize,
	// hijacked) or when the lease was lost.
	OnRelease func(Event)
	// OnStoreError is called when a store call fails.
	OnStoreError func(Event)

	// Logger receives warnings (store failures, lost leases, releases). If
	// nil, nothing is logged. Keys and bodies are never logged.
	Logger *slog.Logger
}

// Idempotency implements the Idempotency-Key header (IETF httpapi draft):
// the first request with a key runs and its response is stored and
// replayed to duplicates. It is safe for concurrent use.
type Idempotency struct {
	cfg         Config
	methods     []string
	allow       map[string]struct{} // stored response headers
	lastHeader  atomic.Pointer[sharedHeader]
	mem         *MemoryStore // cfg.Store, if it is one
	nonBlocking bool
	ownerPrefix string
	ownerSeq    atomic.Uint64
	bufs        sync.Pool // *bytes.Buffer for responses
	exts        sync.Pool // *extender
	extSeq      atomic.Uint32
	renew       [renewLists]renewList
	hashBufs    sync.Pool // *[]byte for hashing
}

// New returns an Idempotency configured by cfg. It panics if cfg.Store is
// nil.
func New(cfg Config) *Idempotency {
	if cfg.Store == nil {
		panic("idempotency: Config.Store is nil")
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 24 * time.Hour
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 60 * time.Second
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = 1 << 20
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = 1 << 20
	}
	if cfg.StoreStatus == nil {
		cfg.StoreStatus = defaultStoreStatus
	}
	if cfg.StoreTimeout <= 0 {
		cfg.StoreTimeout = 5 * time.Second
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = time.Second
	}
	x := &Idempotency{cfg: cfg, methods: cfg.Methods}
	for i := range x.renew {
		x.renew[i].x = x
	}
	if x.methods == nil {
		x.methods = []string{http.MethodPost, http.MethodPatch}
	}
	hs := cfg.StoreHeaders
	if hs == nil {
		hs = []string{"Content-Type", "Content-Encoding", "Content-Language", "Content-Disposition",
			"Content-Location", "Location", "ETag", "Last-Modified", "Cache-Control", "Expires",
			"Link", "Vary", "Preference-Applied"}
	}
	x.allow = make(map[string]struct{}, len(hs))
	for _, h := range hs {
		h = http.CanonicalHeaderKey(h)
		if !neverStored(h) {
			x.allow[h] = struct{}{}
		}
	}
	x.bufs.New = func() any { return new(bytes.Buffer) }
	x.hashBufs.New = func() any { b := make([]byte, 0, 512); return &b }
	_, x.nonBlocking = cfg.Store.(noDeadline)
	x.mem, _ = cfg.Store.(*MemoryStore)
	x.ownerPrefix = newToken()[:16]
	return x
}

func defaultStoreStatus(status int) bool {
	switch status {
	case http.StatusRequestTimeout, http.StatusConflict, http.StatusTooEarly, http.StatusTooManyRequests:
		return false
	}
	return status < 500
}

// neverStored reports the headers that are never stored or replayed.
func neverStored(h string) bool {
	switch h {
	case "Set-Cookie", "Set-Cookie2", "Connection", "Keep-Alive", "Proxy-Connection",
		"Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding",
		"Upgrade", "Content-Length", "Date", "Alt-Svc", "Idempotent-Replayed":
		return true
	}
	return false
}

func (x *Idempotency) guards(method string) bool {
	for _, m := range x.methods {
		if m == method {
			return true
		}
	}
	return false
}

// Handler returns middleware that guards next: see the package doc.
func (x *Idempotency) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !x.guards(r.Method) {
			next.ServeHTTP(w, r)
			return
		}
		in, ok := x.prepare(w, r)
		if !ok {
			return
		}
		if in == nil { // no key and none required
			next.ServeHTTP(w, r)
			return
		}
		if rk, _ := r.Context().Value(replayingKey{}).(string); rk != "" && rk == in.storeKey {
			// Replay runs this very record: it holds the claim.
			next.ServeHTTP(w, r)
			return
		}
		x.serve(w, r, next, in)
	})
}

// keyed is a parsed, keyed request. The capture is allocated with it.
type keyed struct {
	key         string // the client's key
	storeKey    string
	fingerprint string
	owner       string // for a claim
	body        []byte
	br          bodyReader
	cw          capture
}

// prepare parses the key, reads the body and computes the record key and
// the fingerprint. It returns nil, true for a request without a key that may
// pass, and false when it answered the request itself.
func (x *Idempotency) prepare(w http.ResponseWriter, r *http.Request) (*keyed, bool) {
	values := r.Header[HeaderKey]
	if len(values) == 0 {
		if x.cfg.RequireKey {
			x.problem(w, r, Problem{
				Type: ProblemKeyMissing, Status: http.StatusBadRequest,
				Title:  "Idempotency-Key required",
				Detail: "This operation requires an Idempotency-Key header.",
			})
			return nil, false
		}
		return nil, true
	}
	key, err := parseKey(values)
	if err != nil {
		x.problem(w, r, Problem{
			Type: ProblemKeyInvalid, Status: http.StatusBadRequest,
			Title:  "Invalid Idempotency-Key",
			Detail: "The Idempotency-Key header must be one string of at most 255 characters.",
		})
		return nil, false
	}
	var (
		scope string
		kind  = scopeCredentials
		c     = caller.FromContext(r.Context())
	)
	switch {
	case x.cfg.Scope != nil:
		scope, kind = x.cfg.Scope(r), scopeCustom
		if scope == "" {
			if l := x.cfg.Logger; l != nil {
				l.Error("idempotency: Scope returned no scope; is the handler behind authentication?", "method", r.Method, "path", r.URL.Path)
			}
			x.problem(w, r, Problem{
				Type: ProblemScopeMissing, Status: http.StatusInternalServerError,
				Title: "Idempotency scope unavailable",
			})
			return nil, false
		}
	case c != nil:
		scope, kind = c.ID(), scopeCaller
	}
	in := &keyed{key: key}
	body, err := x.readBody(r, &in.br)
	if err != nil {
		x.bodyProblem(w, r, err)
		return nil, false
	}
	in.body = body
	// One allocation for the record key, the fingerprint and the owner.
	var ids [2*2*sha256.Size + ownerLen]byte
	x.hashIDs((*[4 * sha256.Size]byte)(ids[:]), kind, scope, r, key, body)
	x.putOwner(ids[4*sha256.Size:])
	all := string(ids[:])
	in.storeKey, in.fingerprint, in.owner = all[:64], all[64:128], all[128:]
	return in, true
}

func (x *Idempotency) bodyProblem(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, errBodyTooLarge) {
		x.problem(w, r, Problem{
			Type: ProblemBodyTooLarge, Status: http.StatusRequestEntityTooLarge,
			Title:  "Request body too large",
			Detail: "The body of a request with an Idempotency-Key must be at most " + strconv.FormatInt(x.cfg.MaxRequestBytes, 10) + " bytes.",
		})
		return
	}
	x.problem(w, r, Problem{
		Type: ProblemBodyUnreadable, Status: http.StatusBadRequest,
		Title: "Request body could not be read",
	})
}

// The kinds of scope, each hashed with its own tag.
const (
	scopeCredentials = iota
	scopeCustom
	scopeCaller
)

var errBodyTooLarge = errors.New("idempotency: request body too large")

// bodyReader replays a request body that was read for its fingerprint.
type bodyReader struct{ bytes.Reader }

func (*bodyReader) Close() error { return nil }

// firstRead is the most readBody allocates before bytes arrive.
const firstRead = 512

// readBody reads the body up to MaxRequestBytes and puts a replayable copy
// back in r.Body. Its buffer grows as bytes arrive (never beyond the
// announced Content-Length, never ahead of twice what was read), so a client
// that announces a large body and sends little costs little.
func (x *Idempotency) readBody(r *http.Request, br *bodyReader) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	limit := x.cfg.MaxRequestBytes
	if r.ContentLength > limit {
		return nil, errBodyTooLarge
	}
	want := limit + 1 // unknown length: read one byte past the bound to see it
	if r.ContentLength >= 0 {
		want = r.ContentLength
	}
	body := make([]byte, 0, min(want, firstRead))
	for {
		if len(body) == cap(body) {
			if int64(len(body)) >= want {
				break
			}
			body = slices.Grow(body, int(min(want-int64(len(body)), int64(max(len(body), firstRead)))))
		}
		n, err := r.Body.Read(body[len(body):cap(body)])
		body = body[:len(body)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, errBodyTooLarge
			}
			return nil, err
		}
	}
	if r.ContentLength >= 0 && int64(len(body)) < r.ContentLength {
		return nil, io.ErrUnexpectedEOF
	}
	if int64(len(body)) > limit {
		return nil, errBodyTooLarge
	}
	br.Reset(body)
	r.Body = br
	return body, nil
}

// hashIDs writes in hex to ids the record key (the SHA-256 of the scope,
// method, route and key) and the fingerprint (the SHA-256 of the method,
// path, query and body), hashing both in one buffer. Each part is
// length-prefixed so that no two tuples collide. What is hashed must never
// change: records written before an upgrade must keep their keys and
// fingerprints.
func (x *Idempotency) hashIDs(ids *[4 * sha256.Size]byte, kind int, scope string, r *http.Request, key string, body []byte) {
	bp := x.hashBufs.Get().(*[]byte)
	b := (*bp)[:0]
	switch kind {
	case scopeCredentials:
		b = append(b, "hf-idem-1c\x00"...)
		// Every line: HTTP/2 may split cookies over several.
		for _, name := range [...]string{"Authorization", "Cookie"} {
			vs := r.Header[name]
			b = binary.AppendUvarint(b, uint64(len(vs)))
			for _, v := range vs {
				b = appendPart(b, v)
			}
		}
	case scopeCaller:
		// Its own tag: no Config.Scope value collides with a caller's ID.
		b = append(b, "hf-idem-1v\x00"...)
		b = appendPart(b, scope)
	default:
		b = append(b, "hf-idem-1s\x00"...)
		b = appendPart(b, scope)
	}
	path := r.URL.EscapedPath()
	route := path
	if x.cfg.Route != nil {
		route = x.cfg.Route(r)
	}
	b = appendPart(b, r.Method)
	b = appendPart(b, route)
	b = appendPart(b, key)
	sum := sha256.Sum256(b)
	encodeHex(ids[:2*sha256.Size], sum[:])

	// The fingerprint: the method, path, query and body.
	b = appendPart(b[:0], r.Method)
	b = appendPart(b, path)
	b = appendPart(b, r.URL.RawQuery)
	// A tag byte tells a hashed body from an inline one: without it, a
	// 32-byte body equal to the SHA-256 of a large body would encode alike.
	if len(body) > 4<<10 {
		sum := sha256.Sum256(body)
		b = append(b, 'h')
		b = append(b, sum[:]...)
	} else {
		b = append(b, 'b')
		b = binary.AppendUvarint(b, uint64(len(body)))
		b = append(b, body...)
	}
	sum = sha256.Sum256(b)
	encodeHex(ids[2*sha256.Size:], sum[:])
	x.putHashBuf(bp, b)
}

func (x *Idempotency) putHashBuf(bp *[]byte, b []byte) {
	if cap(b) <= 16<<10 {
		*bp = b[:0]
		x.hashBufs.Put(bp)
	}
}

// appendPart appends s with its length as a uvarint: a prefix-free
// encoding, so no two tuples of parts encode alike.
func appendPart(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// ownerLen is the length of an owner token.
const ownerLen = 16 + 1 + 16

// newOwner returns a token unique to a claim: a random per-instance prefix
// (crypto/rand) and a counter.
func (x *Idempotency) newOwner() string {
	var b [ownerLen]byte
	x.putOwner(b[:])
	return string(b[:])
}

func (x *Idempotency) putOwner(b []byte) {
	copy(b, x.ownerPrefix)
	b[16] = '.'
	n := x.ownerSeq.Add(1)
	const digits = "0123456789abcdef"
	for i := ownerLen - 1; i > 16; i-- {
		b[i] = digits[n&0xf]
		n >>= 4
	}
}

// newToken returns 128 random bits in hex.
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// noDeadline is implemented by stores whose calls never block (the memory
// store): the handler then spares them a timeout context per call.
type noDeadline interface{ neverBlocks() }

func nop() {}

func (x *Idempotency) storeCtx(parent context.Context) (context.Context, context.CancelFunc) {
	if x.nonBlocking {
		return parent, nop
	}
	return context.WithTimeout(parent, x.cfg.StoreTimeout)
}

// detachedCtx is for calls that must happen even though the client left:
// completing, releasing.
func (x *Idempotency) detachedCtx(parent context.Context) (context.Context, context.CancelFunc) {
	if x.nonBlocking {
		return context.WithoutCancel(parent), nop
	}
	return context.WithTimeout(context.WithoutCancel(parent), x.cfg.StoreTimeout)
}

func (x *Idempotency) serve(w http.ResponseWriter, r *http.Request, next http.Handler, in *keyed) {
	owner := in.owner
	ctx, cancel := x.storeCtx(r.Context())
	rec, claimed, err := x.cfg.Store.Claim(ctx, in.storeKey, in.fingerprint, owner, x.cfg.Lease)
	cancel()
	if err != nil {
		x.storeError(r, in.key, "", "claim", err)
		if x.cfg.FailOpen {
			next.ServeHTTP(w, r)
			return
		}
		x.unavailable(w, r)
		return
	}
	if !claimed {
		x.answer(w, r, in, rec)
		return
	}
	x.run(w, r, next, in, owner, rec.Fence)
}

func (x *Idempotency) unavailable(w http.ResponseWriter, r *http.Request) {
	x.problem(w, r, Problem{
		Type: ProblemStoreUnavailable, Status: http.StatusServiceUnavailable,
		Title:      "Idempotency store unavailable",
		Detail:     "The request was not run. Retry it with the same Idempotency-Key.",
		RetryAfter: x.cfg.RetryAfter,
	})
}

// answer answers a duplicate from the existing record.
func (x *Idempotency) answer(w http.ResponseWriter, r *http.Request, in *keyed, rec Record) {
	switch {
	case rec.Fingerprint != in.fingerprint:
		if f := x.cfg.OnConflict; f != nil {
			f(Event{Request: r, Key: in.key, Reason: ReasonMismatch})
		}
		x.outcome(OutcomeMismatch, r, "", http.StatusUnprocessableEntity)
		x.problem(w, r, Problem{
			Type: ProblemKeyReused, Status: http.StatusUnprocessableEntity,
			Title:  "Idempotency-Key reused",
			Detail: "This Idempotency-Key was used with a different request.",
		})
	case rec.State == StateDone:
		if resp := rec.Response; resp == nil || resp.Status < 200 || resp.Status > 999 {
			// A record that no handler wrote (a shared store is writable
			// by others): never run the request again, never panic in
			// WriteHeader.
			x.storeError(r, in.key, "", "replay", errCorruptRecord)
			x.unavailable(w, r)
			return
		}
		if f := x.cfg.OnReplay; f != nil {
			f(Event{Request: r, Key: in.key, Status: rec.Response.Status})
		}
		x.outcome(OutcomeReplay, r, "", rec.Response.Status)
		writeStored(w, rec.Response)
	case rec.State == StateQueued:
		x.outcome(OutcomeQueued, r, "", http.StatusAccepted)
		x.accepted(w, r, in.key)
	default: // in flight
		if f := x.cfg.OnConflict; f != nil {
			f(Event{Request: r, Key: in.key, Reason: ReasonInFlight})
		}
		x.outcome(OutcomeConflict, r, "", http.StatusConflict)
		x.problem(w, r, Problem{
			Type: ProblemKeyInUse, Status: http.StatusConflict,
			Title:      "Request in progress",
			Detail:     "A request with this Idempotency-Key is being processed. Retry later.",
			RetryAfter: x.cfg.RetryAfter,
		})
	}
}

// errCorruptRecord reports a stored record that the handler cannot replay.
var errCorruptRecord = errors.New("idempotency: corrupt stored record")

// writeStored replays a stored response. Headers that are never stored are
// skipped here too, in case the store holds a record this package did not
// write. The values are copied: the memory store shares them between
// records, and a middleware above may edit a header in place.
func writeStored(w http.ResponseWriter, resp *Response) {
	h := w.Header()
	// One allocation for all the values, if each header has one (or
	// more, if not), and ours.
	all := make([]string, 0, len(resp.Header)+2)
	for k, vs := range resp.Header {
		if neverStored(http.CanonicalHeaderKey(k)) {
			continue
		}
		start := len(all)
		all = append(all, vs...)
		h[k] = all[start:len(all):len(all)]
	}
	all = append(all, "true", strconv.Itoa(len(resp.Body)))
	n := len(all)
	h[HeaderReplayed] = all[n-2 : n-1 : n-1]
	h["Content-Length"] = all[n-1 : n : n]
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
}

// run runs next under the claim and completes or releases it.
func (x *Idempotency) run(w http.ResponseWriter, r *http.Request, next http.Handler, in *keyed, owner string, fence uint64) {
	in.cw = capture{w: w, pool: &x.bufs, max: x.cfg.MaxResponseBytes}
	cw := &in.cw
	ext := x.extend(r, in, owner, fence)
	panicked := true
	defer func() {
		if panicked {
			ext.stop()
			x.release(r, in.key, "", in.storeKey, owner, fence, ReasonPanic, cw.status)
			// The buffered response is dropped; the panic goes on to the
			// server or a recovery middleware, which answers.
			cw.finish()
		}
	}()
	next.ServeHTTP(cw, r)
	cw.returned()
	panicked = false
	status := cw.status
	if status == 0 {
		status = http.StatusOK
	}
	x.outcome(OutcomeFirst, r, "", status)

	switch {
	case cw.passReason != "":
		ext.stop()
		x.release(r, in.key, "", in.storeKey, owner, fence, cw.passReason, cw.status)
	case ext.isLost():
		ext.stop()
		x.lost(r, in.key, cw.status)
		cw.send()
	case !x.cfg.StoreStatus(status):
		ext.stop()
		x.release(r, in.key, "", in.storeKey, owner, fence, ReasonStatus, status)
		cw.send()
	default:
		header, headerBytes := x.storedHeader(w.Header())
		resp := Response{Status: status, Header: header, Body: cw.bytes()}
		var err error
		if m := x.mem; m != nil {
			// The memory store keeps the body in a slice of its own (and
			// the stored header, which is never modified) as they are.
			resp.Body = cw.owned()
			err = m.completeOwned(in.storeKey, owner, fence, resp, headerBytes, x.cfg.TTL)
		} else {
			err = x.complete(r.Context(), in.storeKey, owner, fence, resp)
		}
		switch {
		case err == nil:
			ext.stop()
		case errors.Is(err, ErrNotOwner):
			ext.stop()
			x.lost(r, in.key, status)
		default:
			// The handler ran: its response must be stored, or a retry
			// after the lease would run it again. Keep the lease renewed
			// (duplicates get 409 meanwhile) and retry in the background;
			// the client gets its answer now.
			x.storeError(r, in.key, "", "complete", err)
			resp.Body = bytes.Clone(resp.Body)
			go func() {
				defer ext.stop()
				x.completeRetry(r, in.key, "", in.storeKey, owner, fence, resp, ext)
			}()
		}
		cw.send()
	}
	cw.finish()
}

// complete stores a response. The memory store takes a fresh copy without
// copying it again.
func (x *Idempotency) complete(parent context.Context, storeKey, owner string, fence uint64, resp Response) error {
	if m := x.mem; m != nil {
		resp.Body = bytes.Clone(resp.Body)
		return m.completeOwned(storeKey, owner, fence, resp, headerSize(resp.Header), x.cfg.TTL)
	}
	ctx, cancel := x.detachedCtx(parent)
	defer cancel()
	return x.cfg.Store.Complete(ctx, storeKey, owner, fence, resp, x.cfg.TTL)
}

// completeRetry retries a Complete that failed (Store.Complete is
// idempotent), with backoff, while ext keeps the lease, for up to
// completeRetryLeases leases. It reports whether the response was stored.
func (x *Idempotency) completeRetry(r *http.Request, key, route, storeKey, owner string, fence uint64, resp Response, ext *extender) bool {
	deadline := time.Now().Add(completeRetryLeases * x.cfg.Lease)
	wait := 50 * time.Millisecond
	for {
		t := time.NewTimer(wait)
		<-t.C
		err := x.complete(r.Context(), storeKey, owner, fence, resp)
		switch {
		case err == nil:
			return true
		case errors.Is(err, ErrNotOwner):
			x.lost(r, key, resp.Status)
			return false
		}
		if ext != nil && ext.isLost() {
			x.lost(r, key, resp.Status)
			return false
		}
		if time.Now().After(deadline) {
			x.storeError(r, key, route, "complete", err)
			if l := x.cfg.Logger; l != nil {
				l.Error("idempotency: response could not be stored; a retry after the lease may run the request again", "method", r.Method, "path", r.URL.Path)
			}
			return false
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// completeRetryLeases is how many leases a failed Complete is retried for.
const completeRetryLeases = 5

// sharedHeader is a stored response header and its headerSize.
type sharedHeader struct {
	h    http.Header
	kvs  []headerKV // h's
	size int64
}

type headerKV struct {
	k  string
	vs []string
}

// storedHeader returns a copy of the allow-listed headers of h, and its
// headerSize (for the memory store's bound). Stored headers are never
// modified, so consecutive responses with the same stored headers (the same
// Content-Type and nothing else, say) share one copy: it saves the
// allocation and the store's memory.
func (x *Idempotency) storedHeader(h http.Header) (http.Header, int64) {
	if last := x.lastHeader.Load(); last != nil && x.sameStored(last, h) {
		return last.h, last.size
	}
	n, values := 0, 0
	for k, vs := range h {
		if _, ok := x.allow[k]; ok {
			n++
			values += len(vs)
		}
	}
	if n == 0 {
		return nil, 0
	}
	out := make(http.Header, n)
	all := make([]string, 0, values)
	for k, vs := range h {
		if _, ok := x.allow[k]; ok {
			start := len(all)
			all = append(all, vs...)
			out[k] = all[start:len(all):len(all)]
		}
	}
	size := headerSize(out)
	kvs := make([]headerKV, 0, len(out))
	for k, vs := range out {
		kvs = append(kvs, headerKV{k, vs})
	}
	x.lastHeader.Store(&sharedHeader{h: out, kvs: kvs, size: size})
	return out, size
}

// sameStored reports whether the allow-listed headers of h are the ones in
// last.
func (x *Idempotency) sameStored(last *sharedHeader, h http.Header) bool {
	stored := last.h
	if len(h) == len(stored) {
		// The common case, h holds only stored headers: h has the same
		// keys as stored (which are distinct and allow-listed) if it has
		// each of them, and no map is walked.
		for _, kv := range last.kvs {
			if vs, ok := h[kv.k]; !ok || !equalValues(vs, kv.vs) {
				goto walk
			}
		}
		return true
	}
walk:
	n := 0
	for k, vs := range h {
		if _, ok := x.allow[k]; !ok {
			continue
		}
		n++
		if svs, ok := stored[k]; !ok || !equalValues(vs, svs) {
			return false
		}
	}
	return n == len(stored)
}

func equalValues(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (x *Idempotency) release(r *http.Request, key, route, storeKey, owner string, fence uint64, reason string, status int) {
	ctx, cancel := x.detachedCtx(r.Context())
	err := x.cfg.Store.Release(ctx, storeKey, owner, fence)
	cancel()
	if err != nil && !errors.Is(err, ErrNotOwner) {
		x.storeError(r, key, route, "release", err)
	}
	if l := x.cfg.Logger; l != nil {
		l.Info("idempotency: key released, response not stored", "reason", reason, "status", status, "method", r.Method, "path", r.URL.Path)
	}
	if f := x.cfg.OnRelease; f != nil {
		f(Event{Request: r, Key: key, Reason: reason, Status: status})
	}
}

func (x *Idempotency) lost(r *http.Request, key string, status int) {
	if l := x.cfg.Logger; l != nil {
		l.Warn("idempotency: lease lost while the handler ran; response not stored", "method", r.Method, "path", r.URL.Path)
	}
	if f := x.cfg.OnRelease; f != nil {
		f(Event{Request: r, Key: key, Reason: ReasonLeaseLost, Status: status})
	}
}

func (x *Idempotency) storeError(r *http.Request, key, route, op string, err error) {
	x.outcome(OutcomeStoreError, r, route, 0)
	if l := x.cfg.Logger; l != nil {
		l.Error("idempotency: store "+op+" failed", "err", err, "method", r.Method, "path", r.URL.Path, "fail_open", x.cfg.FailOpen)
	}
	if f := x.cfg.OnStoreError; f != nil {
		f(Event{Request: r, Key: key, Err: err})
	}
}

// extender renews the lease of a running claim every third of the lease.
// Running claims are kept in a few lists (renewList), each with one timer
// that ticks every sixth of the lease while the list is not empty: a claim
// costs a list insertion and removal, not a timer of its own, nor a reading
// of the clock. Extenders are pooled, each bound to one list for good: a
// generation number tells a renewal of this use from a late one of a
// previous use.
type extender struct {
	x    *Idempotency
	l    *renewList
	lost atomic.Bool // the lease was lost; written under l.mu
	// Guarded by l.mu:
	prev, next           *extender // in l, while active
	gen                  uint64
	since                uint64 // l.tick when claimed or last renewed
	active, renewing     bool
	r                    *http.Request
	key, route, storeKey string
	owner                string
	fence                uint64
}

// renewList is a list of running claims and the timer that renews them.
type renewList struct {
	x     *Idempotency
	mu    sync.Mutex
	head  *extender
	tick  uint64 // timer ticks so far
	armed bool
	t     *time.Timer
	_     [16]byte // keep the lists on separate cache lines
}

// renewLists is the number of renewList of an Idempotency.
const renewLists = 8

// renewEvery is how often a running claim's lease is renewed.
func (x *Idempotency) renewEvery() time.Duration {
	return max(x.cfg.Lease/3, time.Millisecond)
}

// renewTick is the period of a renewList's timer: a claim is renewed on
// the second tick after it was claimed or renewed, at most renewEvery
// later.
func (x *Idempotency) renewTick() time.Duration {
	return max(x.renewEvery()/2, time.Millisecond/2)
}

// extend starts renewing the claim; stop ends it.
func (x *Idempotency) extend(r *http.Request, in *keyed, owner string, fence uint64) *extender {
	e, _ := x.exts.Get().(*extender)
	if e == nil {
		e = &extender{x: x, l: &x.renew[x.extSeq.Add(1)%renewLists]}
	}
	l := e.l
	l.mu.Lock()
	e.gen++
	e.active, e.renewing = true, false
	e.lost.Store(false)
	e.r, e.key, e.route, e.storeKey, e.owner, e.fence = r, in.key, "", in.storeKey, owner, fence
	e.since = l.tick
	e.prev, e.next = nil, l.head
	if l.head != nil {
		l.head.prev = e
	}
	l.head = e
	if !l.armed {
		l.armed = true
		if l.t == nil {
			l.t = time.AfterFunc(x.renewTick(), l.fire)
		} else {
			l.t.Reset(x.renewTick())
		}
	}
	l.mu.Unlock()
	return e
}

// renewal is a claim due for renewal, as it was when the timer ticked.
type renewal struct {
	e                    *extender
	gen                  uint64
	r                    *http.Request
	key, route, storeKey string
	owner                string
	fence                uint64
}

// fire is a tick of l's timer: it renews the claims that are due, each in
// its own goroutine (a slow store must not hold up the others), and ticks
// again while l is not empty.
func (l *renewList) fire() {
	l.mu.Lock()
	l.tick++
	var due []renewal
	for e := l.head; e != nil; e = e.next {
		if !e.lost.Load() && !e.renewing && l.tick-e.since >= 2 {
			e.renewing = true
			due = append(due, renewal{e, e.gen, e.r, e.key, e.route, e.storeKey, e.owner, e.fence})
		}
	}
	if l.head != nil {
		l.t.Reset(l.x.renewTick())
	} else {
		l.armed = false
	}
	l.mu.Unlock()
	for _, d := range due {
		go l.renew(d)
	}
}

func (l *renewList) renew(d renewal) {
	x := l.x
	ctx, cancel := x.detachedCtx(d.r.Context())
	err := x.cfg.Store.Extend(ctx, d.storeKey, d.owner, d.fence, x.cfg.Lease)
	cancel()

	l.mu.Lock()
	e := d.e
	current := e.active && e.gen == d.gen
	if current {
		e.renewing = false
		if errors.Is(err, ErrNotOwner) {
			e.lost.Store(true)
		} else {
			// Renewed, or failed: try again a renewEvery later.
			e.since = l.tick
		}
	}
	l.mu.Unlock()
	if current && err != nil && !errors.Is(err, ErrNotOwner) {
		x.storeError(d.r, d.key, d.route, "extend", err)
	}
}

// isLost reports whether the lease was lost.
func (e *extender) isLost() bool {
	return e.lost.Load()
}

// stop ends the renewal and reports whether the lease was lost meanwhile.
// e must not be used after.
func (e *extender) stop() (lost bool) {
	l := e.l
	l.mu.Lock()
	if !e.active { // stopped already: it may be in use again
		l.mu.Unlock()
		return false
	}
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		l.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	}
	e.prev, e.next = nil, nil
	lost = e.lost.Load()
	e.active = false
	e.r, e.key, e.route, e.storeKey, e.owner = nil, "", "", "", ""
	l.mu.Unlock()
	e.x.exts.Put(e)
	return lost
}
