package degrade

import (
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/holdfast-go/holdfast/internal/caller"
	"github.com/holdfast-go/holdfast/internal/httpx"
)

// CacheStatusName is the cache identifier in the Cache-Status header of a
// stale response (RFC 9211).
const CacheStatusName = "holdfast"

// maxVariants bounds the Vary variants kept per URL and caller.
const maxVariants = 8

// Stale keeps the last good response of cacheable GET requests and serves
// it (also to HEAD), marked stale, when the handler or the upstream fails: a
// 5xx status, a transport error or timeout, or an open circuit breaker (an
// error that matches breaker.ErrOpen with errors.Is). It is an RFC 5861
// stale-if-error cache and nothing more: a working upstream is always
// asked, so clients never see a stale response while it answers.
//
// A served stale response carries Age, "stale-if-error" added to the
// Holdfast-Degraded list (after the reasons outer middleware set, e.g. the
// mode or authfallback's reason, which are kept) and a Cache-Status member (RFC 9211) appended after those of upstream
// caches: "holdfast; fwd=stale; fwd-status=503; ttl=-90;
// detail=stale-if-error" after a failure (fwd-status absent after a
// transport error; fwd=bypass while the stored response is still fresh),
// and "holdfast; hit; ttl=-90; detail=stale-if-error" from [Stale.Lookup]
// and [Stale.ServeStale], which serve without forwarding. ttl is the
// remaining freshness in seconds, negative when stale.
//
// What is stored follows RFC 9111: only GET responses with a status that
// is cacheable by default (200, 203, 204, 300, 301, 308, 404, 405, 410,
// 414); never a response with no-store (in the request or the response),
// no-cache or must-revalidate (which forbid serving it stale), or Vary: *;
// Set-Cookie is never stored. A request that carries credentials
// (Authorization or Cookie) is stored under its caller's scope ([Stale.Scope])
// and only ever served to the same caller, never put in the entry shared
// between callers (stricter than RFC 9111 §3.5, which would share a public
// response); private responses are only stored in such a per-caller entry.
// A response stored in the shared entry must not be private,
// proxy-revalidate, s-maxage, or carry Set-Cookie. A stale response is served
// only within stale-if-error=N seconds past its freshness lifetime when the
// response has that directive, and never more than MaxStale past it.
//
// The zero value is ready to use. A Stale must not be copied after first
// use. It is safe for concurrent use.
type Stale struct {
	// MaxEntries bounds the number of stored responses. If zero, 1024.
	MaxEntries int
	// MaxBytes bounds the memory held by stored responses (bodies and
	// headers). The least recently used are evicted first. If zero, 32 MiB.
	MaxBytes int64
	// MaxEntryBytes bounds one stored body; larger responses pass through
	// uncached. If zero, 1 MiB.
	MaxEntryBytes int64
	// MaxStale bounds how long past its freshness lifetime a response may
	// be served stale. If zero, 1 h.
	MaxStale time.Duration

	// Scope returns the caller a request belongs to, e.g. the
	// authenticated subject or tenant. A response is stored and served
	// only within one scope.
	//
	// A request whose context carries a verified caller (authfallback's
	// Handler sets it) is always scoped by that caller's access: its issuer
	// and subject, its granted scopes and whether it was accepted degraded;
	// Scope, when set, only narrows that further. A down-scoped or degraded
	// token of the same subject is therefore never served a response
	// produced for wider access, even with Scope set to the subject.
	//
	// Without a verified caller: if Scope is nil, or when it returns "", a request
	// without Authorization and Cookie headers is in the scope shared by
	// every caller and any other request is scoped by a SHA-256 hash of
	// those headers, so a response is never served to another credential:
	// a request with credentials is never shared, whatever Scope says.
	//
	// A service that authenticates callers by anything else (an API key
	// header, a client certificate) must set Scope, or its responses are
	// shared. Likewise a response that depends on a request header must
	// name it in Vary, as for any HTTP cache.
	Scope func(*http.Request) string

	// IsFailure reports whether a status the handler or the upstream
	// answered is a failure that a stored response replaces. It is not
	// asked about statuses that are stored (200, 404, ...). If nil,
	// [DefaultIsFailure]: 5xx statuses and 429 Too Many Requests.
	IsFailure func(status int) bool

	// OnStale, if not nil, is called each time a stale response is
	// served. It may be called concurrently and must not block.
	OnStale func(StaleEvent)
	// Logger receives a debug line for each stale response served. If
	// nil, nothing is logged.
	Logger *slog.Logger

	inside atomic.Bool // a Controller passes shed reads to Handler (Config.StaleInside)

	mu    sync.Mutex
	lru   list.List // of *entry, most recent at the front
	index map[string][]*list.Element
	urls  map[string]int // entries per URL part of their key, any scope
	bytes int64
}

// StaleEvent describes a stale response served instead of a failure.
type StaleEvent struct {
	Request *http.Request
	// Status is the failed status that was replaced, 0 after an error.
	Status int
	// Err is the transport error that was replaced, nil after a status.
	Err error
	// Age is the age of the response served.
	Age time.Duration
}

// entry is a stored response. It is immutable once in the cache.
type entry struct {
	primary    string
	fields     []field  // header as a list, so that a comparison need not range over a map
	vary       []string // canonical field names
	varyVals   []string // the request's values of those fields
	status     int
	header     http.Header
	body       []byte
	stored     time.Time
	initialAge time.Duration
	lifetime   time.Duration
	sie        time.Duration // stale-if-error, -1 if absent
	size       int64
	// refreshed is how long after stored the same response was seen
	// again (see Stale.refresh): the entry's age counts from then. It is
	// the one field that changes once the entry is in the cache.
	refreshed atomic.Int64
}

// sameHeader reports whether the header of a response, once stripped of
// the fields that are not stored and of pre (outer middleware's fields, nil
// on the client side), equals e's: when there is no pre and live has no
// field e lacks but Content-Length, e's fields are looked up in live
// instead of ranging over a map (sameStoredHeader).
func (e *entry) sameHeader(live, pre http.Header) bool {
	extra := len(live) - len(e.fields)
	if extra == 1 && live["Content-Length"] != nil {
		extra = 0
	}
	if extra != 0 || pre != nil {
		return sameStoredHeader(live, e.header, pre)
	}
	// Every field of e is in live with the same values, and live has
	// no other field but Content-Length, which is never stored.
	for _, f := range e.fields {
		if v, ok := live[f.name]; !ok || !slices.Equal(v, f.values) {
			return false
		}
	}
	return true
}

// field is one field of a stored header.
type field struct {
	name   string
	values []string
}

// sameStoredHeader reports whether live, once stripped of the fields that
// are not stored and of pre (outer middleware's fields), equals stored.
func sameStoredHeader(live, stored, pre http.Header) bool {
	n := 0
	for k, v := range live {
		if dropHeader(k) || (pre[k] != nil && slices.Equal(pre[k], v)) {
			continue
		}
		sv, ok := stored[k]
		if !ok || !slices.Equal(v, sv) {
			return false
		}
		n++
	}
	return n == len(stored) && live["Connection"] == nil
}

func (s *Stale) maxEntries() int {
	if s.MaxEntries > 0 {
		return s.MaxEntries
	}
	return 1024
}

func (s *Stale) maxBytes() int64 {
	if s.MaxBytes > 0 {
		return s.MaxBytes
	}
	return 32 << 20
}

func (s *Stale) maxEntryBytes() int64 {
	if s.MaxEntryBytes > 0 {
		return s.MaxEntryBytes
	}
	return 1 << 20
}

func (s *Stale) maxStale() time.Duration {
	if s.MaxStale > 0 {
		return s.MaxStale
	}
	return time.Hour
}

// scope returns the cache scope of r: "" for the entry shared by every
// caller, else a key that cannot collide between the kinds of scope. When
// authfallback (or anything that sets internal/caller) verified the caller,
// the scope is its access: issuer, subject, granted scopes and whether it
// was degraded, refined by Scope when Scope is set; Scope can never widen it.
// Without a verified caller, Scope's value is the scope, and a request that
// carries Authorization or Cookie is never put into the shared scope: when
// Scope returns "" for it (it could not tell the caller, or the author meant
// "anyone"), it is scoped by its credentials as if Scope were nil.
func (s *Stale) scope(r *http.Request) string {
	var buf [256]byte
	return string(s.appendScope(buf[:0], r))
}

// appendScope appends r's scope (see scope) to b.
func (s *Stale) appendScope(b []byte, r *http.Request) []byte {
	var custom string
	if s.Scope != nil {
		custom = s.Scope(r)
	}
	if c := caller.FromContext(r.Context()); c != nil {
		a := c.Access()
		b = append(b, "v:"...)
		if custom == "" {
			return append(b, a...)
		}
		b = strconv.AppendInt(b, int64(len(a)), 10)
		b = append(b, ':')
		b = append(b, a...)
		return append(b, custom...)
	}
	if custom != "" {
		return append(append(b, "s:"...), custom...)
	}
	return appendCredentialScope(b, r)
}

// appendCredentialScope appends a hash of the credentials a request
// carries to b; nothing when none. Each value is length-prefixed, so no
// two different sets of credentials hash the same input. Header keys a
// client set without canonicalizing them (req.Header["authorization"])
// count too. The usual case, one Authorization value and nothing else,
// hashes the value as it is, without copying it (a bearer JWT is 1 KiB),
// under a prefix of its own ("c1:"), so that it never meets the digest of
// an encoded set.
func appendCredentialScope(b []byte, r *http.Request) []byte {
	a, c := r.Header["Authorization"], r.Header["Cookie"]
	var odd []string // values under non-canonical keys, tagged
	canonical := 0
	if a != nil {
		canonical++
	}
	if c != nil {
		canonical++
	}
	if len(r.Header) > canonical { // other keys: one may be a non-canonical spelling
		for k, vs := range r.Header {
			if k == "Authorization" || k == "Cookie" {
				continue
			}
			tag := ""
			switch {
			case len(k) == len("Authorization") && strings.EqualFold(k, "Authorization"):
				tag = "a"
			case len(k) == len("Cookie") && strings.EqualFold(k, "Cookie"):
				tag = "c"
			default:
				continue
			}
			for _, v := range vs {
				odd = append(odd, tag+v)
			}
		}
	}
	if len(a) == 0 && len(c) == 0 && len(odd) == 0 {
		return b
	}
	if len(a) == 1 && len(c) == 0 && len(odd) == 0 {
		sum := sha256.Sum256(unsafe.Slice(unsafe.StringData(a[0]), len(a[0])))
		b = append(b, "c1:"...)
		return append(b, sum[:]...)
	}
	slices.Sort(odd) // map order is random
	var stack [512]byte
	in := stack[:0]
	add := func(tag byte, v string) {
		in = append(in, tag)
		in = strconv.AppendInt(in, int64(len(v)), 10)
		in = append(in, ':')
		in = append(in, v...)
	}
	for _, v := range a {
		add('a', v)
	}
	for _, v := range c {
		add('c', v)
	}
	for _, v := range odd {
		add('o', v)
	}
	sum := sha256.Sum256(in)
	b = append(b, "c:"...)
	return append(b, sum[:]...) // raw bytes: the key is never shown
}

// appendPrimary appends r's primary key to b: its scope, length-prefixed
// so that no scope can run into the URL part, and its URL. scoped is set
// when the scope is not the one shared by every caller.
func (s *Stale) appendPrimary(b []byte, r *http.Request) (key []byte, scoped bool) {
	var sb [256]byte
	sc := s.appendScope(sb[:0], r)
	b = strconv.AppendInt(b, int64(len(sc)), 10)
	b = append(b, ':')
	b = append(b, sc...)
	b = append(b, 0)
	return appendURLPart(b, r), len(sc) > 0
}

// appendURLPart appends the part of r's primary key that follows its scope:
// scheme, lower-cased host and request URI.
func appendURLPart(b []byte, r *http.Request) []byte {
	b = append(b, r.URL.Scheme...)
	b = append(b, 0)
	host := r.URL.Host
	if host == "" {
		host = r.Host
	}
	lower := true
	for i := 0; i < len(host) && lower; i++ {
		lower = host[i] < 'A' || host[i] > 'Z'
	}
	if lower { // the usual case: one copy
		b = append(b, host...)
	} else {
		for i := 0; i < len(host); i++ {
			c := host[i]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			b = append(b, c)
		}
	}
	b = append(b, 0)
	return appendRequestURI(b, r.URL)
}

// urlPart returns the part of a primary key that follows its scope (see
// appendPrimary), a substring of it.
func urlPart(primary string) string {
	i := strings.IndexByte(primary, ':')
	n, err := strconv.Atoi(primary[:i])
	if err != nil {
		panic("degrade: malformed primary key")
	}
	return primary[i+1+n+1:]
}

// storesURL reports whether any response is stored for r's URL, under any
// scope: when none is, no stored variant can need evicting, and r's key
// (a hash of its credentials, for a request without a verified caller)
// need not be built.
func (s *Stale) storesURL(r *http.Request) bool {
	var buf [256]byte
	u := appendURLPart(buf[:0], r)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.urls[string(u)] > 0
}

// appendRequestURI appends u.RequestURI() to b without building it.
func appendRequestURI(b []byte, u *url.URL) []byte {
	if u.Opaque == "" {
		if p := u.EscapedPath(); p != "" {
			b = append(b, p...)
		} else {
			b = append(b, '/')
		}
	} else {
		if strings.HasPrefix(u.Opaque, "//") {
			b = append(append(b, u.Scheme...), ':')
		}
		b = append(b, u.Opaque...)
	}
	if u.ForceQuery || u.RawQuery != "" {
		b = append(append(b, '?'), u.RawQuery...)
	}
	return b
}

// cacheableStatus reports whether a status is cacheable by default (RFC
// 9110 §15.1) and not an error this cache would replace.
func cacheableStatus(code int) bool {
	switch code {
	case 200, 203, 204, 300, 301, 308, 404, 405, 410, 414:
		return true
	}
	return false
}

// isFailure reports whether a status is a failure that a stale response
// replaces: Stale.IsFailure, or by default a 5xx status or 429.
func (s *Stale) isFailure(code int) bool {
	if s.IsFailure != nil {
		return s.IsFailure(code)
	}
	return DefaultIsFailure(code)
}

// DefaultIsFailure is the classification [Stale] uses when its IsFailure is
// nil: a 5xx status, or 429 Too Many Requests (a provider that throttles
// does not answer, as surely as one that fails).
func DefaultIsFailure(status int) bool {
	return status >= 500 && status <= 599 || status == http.StatusTooManyRequests
}

// policy decides whether a response may be stored. evict is set when an
// entry stored earlier for the same request must go (the origin now says
// no-store, or made the response private).
func policy(r *http.Request, shared bool, status int, h http.Header) (cc cacheControl, ok, evict bool) {
	if !cacheableStatus(status) {
		return cc, false, false
	}
	if parseCacheControl(r.Header["Cache-Control"]).noStore {
		return cc, false, false
	}
	cc = parseCacheControl(h["Cache-Control"])
	if cc.noStore || cc.noCache || cc.mustRevalidate {
		return cc, false, true
	}
	if shared && sharedRefuses(r, cc, h) {
		return cc, false, true
	}
	if _, star := varyFields(h["Vary"]); star {
		return cc, false, true
	}
	return cc, true, false
}

// sharedRefuses reports whether a response that policy lets a caller's
// own entry store must not go into the entry shared by every caller.
func sharedRefuses(r *http.Request, cc cacheControl, h http.Header) bool {
	return cc.private || cc.proxyRevalidate || cc.sMaxAge >= 0 || len(h["Set-Cookie"]) > 0 ||
		len(r.Header["Authorization"]) > 0 && !cc.public
}

// dropHeader reports whether a response field is never stored: hop-by-hop
// fields, cookies, and what a stale response recomputes.
func dropHeader(k string) bool {
	switch k {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Set-Cookie", "Set-Cookie2",
		"Age", "Content-Length", httpx.HeaderDegraded:
		return true
	}
	return false
}

// storedHeader removes from header, in place, the fields that are never
// stored: hop-by-hop fields (and those Connection names), cookies, and the
// fields a stale response recomputes.
func storedHeader(header http.Header) http.Header {
	for _, f := range header["Connection"] {
		for name := range strings.SplitSeq(f, ",") {
			if name = trimOWS(name); name != "" {
				delete(header, http.CanonicalHeaderKey(name))
			}
		}
	}
	for k := range header {
		if dropHeader(k) {
			delete(header, k)
		}
	}
	return header
}

// ageOf returns the Age of a response header, 0 if absent or malformed.
func ageOf(h http.Header) time.Duration {
	if a, ok := parseDelta(firstValue(h, "Age"), true); ok {
		return time.Duration(a) * time.Second
	}
	return 0
}

// freshness returns the freshness lifetime of a response and its
// stale-if-error (-1 if absent).
func freshness(cc cacheControl, header http.Header, now time.Time) (lifetime, sie time.Duration) {
	switch {
	case cc.maxAge >= 0:
		lifetime = time.Duration(cc.maxAge) * time.Second
	default:
		// Only a present Expires is parsed: ParseTime of "" fails three
		// layouts, each error allocated.
		if v := firstValue(header, "Expires"); v != "" {
			if exp, err := http.ParseTime(v); err == nil {
				date := now
				if dv := firstValue(header, "Date"); dv != "" {
					if d, err := http.ParseTime(dv); err == nil {
						date = d
					}
				}
				if d := exp.Sub(date); d > 0 {
					lifetime = d
				}
			}
		}
	}
	sie = -1
	if cc.staleIfError >= 0 {
		sie = time.Duration(cc.staleIfError) * time.Second
	}
	return lifetime, sie
}

// newEntry builds an entry from a response. header must have been through
// storedHeader; the entry takes ownership of header and body, which must
// not change afterwards.
func newEntry(primary string, r *http.Request, cc cacheControl, status int, header http.Header, age time.Duration, body []byte, now time.Time) *entry {
	e := &entry{primary: primary, status: status, header: header, body: body, stored: now, initialAge: age}
	e.lifetime, e.sie = freshness(cc, header, now)
	if fields, _ := varyFields(header["Vary"]); len(fields) > 0 {
		e.vary = fields
		e.varyVals = make([]string, len(fields))
		for i, f := range fields {
			e.varyVals[i] = strings.Join(r.Header.Values(f), ",")
		}
	}
	e.size = int64(len(body)) + int64(len(primary)) + 256
	e.fields = make([]field, 0, len(header))
	for k, vs := range header {
		e.fields = append(e.fields, field{k, vs})
		e.size += int64(len(k)) + 40
		for _, v := range vs {
			e.size += int64(len(v)) + 16
		}
	}
	return e
}

func firstValue(h http.Header, k string) string {
	if v := h[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (e *entry) matches(r *http.Request) bool {
	for i, f := range e.vary {
		if joinedValues(r.Header[f]) != e.varyVals[i] {
			return false
		}
	}
	return true
}

func joinedValues(v []string) string {
	switch len(v) {
	case 0:
		return ""
	case 1:
		return v[0]
	}
	return strings.Join(v, ",")
}

func (e *entry) sameVariant(o *entry) bool {
	if len(e.vary) != len(o.vary) {
		return false
	}
	for i := range e.vary {
		if e.vary[i] != o.vary[i] || e.varyVals[i] != o.varyVals[i] {
			return false
		}
	}
	return true
}

func (e *entry) age(now time.Time) time.Duration {
	return e.initialAge + max(0, now.Sub(e.stored)-time.Duration(e.refreshed.Load()))
}

// usable reports whether e may be served at now instead of a failure.
func (e *entry) usable(now time.Time, maxStale time.Duration) bool {
	staleness := e.age(now) - e.lifetime
	if staleness > maxStale {
		return false
	}
	return e.sie < 0 || staleness <= e.sie
}

// store puts e into the cache, replacing the same variant.
func (s *Stale) store(e *entry) {
	if e.size > s.maxBytes() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.index == nil {
		s.index = make(map[string][]*list.Element)
	}
	vs := s.index[e.primary]
	for _, el := range vs {
		if el.Value.(*entry).sameVariant(e) {
			s.bytes += e.size - el.Value.(*entry).size
			el.Value = e
			s.lru.MoveToFront(el)
			s.evictLocked()
			return
		}
	}
	if len(vs) >= maxVariants {
		s.removeLocked(vs[0])
	}
	el := s.lru.PushFront(e)
	s.index[e.primary] = append(s.index[e.primary], el)
	if s.urls == nil {
		s.urls = make(map[string]int)
	}
	s.urls[urlPart(e.primary)]++
	s.bytes += e.size
	s.evictLocked()
}

func (s *Stale) evictLocked() {
	maxN, maxB := s.maxEntries(), s.maxBytes()
	for s.lru.Len() > maxN || s.bytes > maxB {
		s.removeLocked(s.lru.Back())
	}
}

func (s *Stale) removeLocked(el *list.Element) {
	e := el.Value.(*entry)
	s.lru.Remove(el)
	s.bytes -= e.size
	if u := urlPart(e.primary); s.urls[u] <= 1 {
		delete(s.urls, u)
	} else {
		s.urls[u]--
	}
	vs := s.index[e.primary]
	for i, v := range vs {
		if v == el {
			vs = append(vs[:i:i], vs[i+1:]...)
			break
		}
	}
	if len(vs) == 0 {
		delete(s.index, e.primary)
	} else {
		s.index[e.primary] = vs
	}
}

// refresh records that prev, found in el by peek, was answered again d
// after it was stored (its age counts from then) and moves it to the front,
// and reports whether it is still stored: el still holds prev while it is
// in the list (a removed element has no next and is not the back) and its
// value was not replaced, so the index need not be searched again.
func (s *Stale) refresh(el *list.Element, prev *entry, d time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if el.Value != prev || (el.Next() == nil && s.lru.Back() != el) {
		return false
	}
	if int64(d) > prev.refreshed.Load() {
		prev.refreshed.Store(int64(d))
	}
	s.lru.MoveToFront(el)
	return true
}

// sameAs reports whether a response just answered is e again, given that
// its stored header equals e's and its body matched e's in full: the same
// status, freshness and age.
func (e *entry) sameAs(status int, lifetime, sie, age time.Duration) bool {
	return e.status == status && e.lifetime == lifetime && e.sie == sie && e.initialAge == age
}

// evict removes the variants of primary that r matches.
func (s *Stale) evict(primary []byte, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, el := range append([]*list.Element(nil), s.index[string(primary)]...) {
		if el.Value.(*entry).matches(r) {
			s.removeLocked(el)
		}
	}
}

// peek returns the variant stored for r under primary, usable or not, and
// the list element holding it (for refresh), or nil.
func (s *Stale) peek(primary []byte, r *http.Request) (*entry, *list.Element) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, el := range s.index[string(primary)] {
		if e := el.Value.(*entry); e.matches(r) {
			return e, el
		}
	}
	return nil, nil
}

// find returns the usable stored response for r, or nil.
func (s *Stale) find(primary []byte, r *http.Request, now time.Time) *entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, el := range s.index[string(primary)] {
		e := el.Value.(*entry)
		if e.matches(r) {
			if !e.usable(now, s.maxStale()) {
				return nil
			}
			s.lru.MoveToFront(el)
			return e
		}
	}
	return nil
}

// Len returns the number of stored responses.
func (s *Stale) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lru.Len()
}

// notForwarded is the fwdStatus of a stale response served without asking
// the next hop (Lookup, ServeStale: an open breaker did not forward).
const notForwarded = -1

// cacheStatus returns this cache's Cache-Status member (RFC 9211) for a
// stale response with the given remaining freshness. fwdStatus is the
// status the next hop answered, 0 after a transport error, notForwarded
// when the request did not go forward. "hit" means not forwarded (§2.1);
// a request that went forward and failed is fwd=stale (the stored response
// was stale) or fwd=bypass (it was fresh, but this cache only stands in
// for failures and forwards every request), with fwd-status when a status
// came back (§2.2, §2.3).
func cacheStatus(ttl int64, fwdStatus int) string {
	b := make([]byte, 0, 80)
	b = append(b, CacheStatusName...)
	switch {
	case fwdStatus == notForwarded:
		b = append(b, "; hit"...)
	case ttl < 0:
		b = append(b, "; fwd=stale"...)
	default:
		b = append(b, "; fwd=bypass"...)
	}
	if fwdStatus > 0 {
		b = append(b, "; fwd-status="...)
		b = strconv.AppendInt(b, int64(fwdStatus), 10)
	}
	b = append(b, "; ttl="...)
	b = strconv.AppendInt(b, ttl, 10)
	b = append(b, "; detail=stale-if-error"...)
	return string(b)
}

// staleHeader returns the response header of a stale response of e; see
// cacheStatus for fwdStatus.
func (e *entry) staleHeader(now time.Time, fwdStatus int) http.Header {
	h := make(http.Header, len(e.header)+4)
	for k, v := range e.header {
		h[k] = append([]string(nil), v...)
	}
	age := e.age(now)
	h.Set("Age", strconv.FormatInt(int64(age/time.Second), 10))
	ttl := int64((e.lifetime - age) / time.Second)
	h.Add("Cache-Status", cacheStatus(ttl, fwdStatus))
	h.Set("Content-Length", strconv.Itoa(len(e.body)))
	return h
}

// staleReason is the Holdfast-Degraded reason of a stale response.
const staleReason = "stale-if-error"

func staleMarked(h http.Header) http.Header {
	httpx.AddDegraded(h, staleReason)
	return h
}

func (s *Stale) served(r *http.Request, e *entry, status int, err error, now time.Time) {
	ev := StaleEvent{Request: r, Status: status, Err: err, Age: e.age(now)}
	if s.Logger != nil {
		s.Logger.Debug("degrade: served stale response", "path", r.URL.Path, "age", ev.Age,
			"status", status, "error", err)
	}
	if s.OnStale != nil {
		s.OnStale(ev)
	}
}

// Lookup returns the stored response for r if one may be served stale
// now, marked like every stale response (Age, Cache-Status,
// Holdfast-Degraded). It is the hook for a circuit breaker's fallback on
// the client side. The caller owns the response and should close its body.
func (s *Stale) Lookup(r *http.Request) (*http.Response, bool) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return nil, false
	}
	now := time.Now()
	var buf [512]byte
	key, _ := s.appendPrimary(buf[:0], r)
	e := s.find(key, r, now)
	if e == nil {
		return nil, false
	}
	s.served(r, e, 0, nil, now)
	return e.response(r, now, notForwarded), true
}

func (e *entry) response(r *http.Request, now time.Time, fwdStatus int) *http.Response {
	var body io.ReadCloser = http.NoBody
	if r.Method != http.MethodHead && len(e.body) > 0 {
		body = io.NopCloser(bytes.NewReader(e.body))
	}
	return &http.Response{
		Status:        strconv.Itoa(e.status) + " " + http.StatusText(e.status),
		StatusCode:    e.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        staleMarked(e.staleHeader(now, fwdStatus)),
		Body:          body,
		ContentLength: int64(len(e.body)),
		Request:       r,
	}
}

// ServeStale writes the stored response for r if one may be served stale
// now and reports whether it did, for a fallback of the caller's own that
// did not call the handler (e.g. an open breaker of its own). Header fields
// already set on w (by outer middleware) are kept unless the stored
// response has them. Nothing is written when it returns false. The
// breaker package's server side takes [Stale.Lookup] instead.
func (s *Stale) ServeStale(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	now := time.Now()
	var buf [512]byte
	key, _ := s.appendPrimary(buf[:0], r)
	e := s.find(key, r, now)
	if e == nil {
		return false
	}
	s.served(r, e, 0, nil, now)
	e.write(w, r, w.Header().Clone(), now, notForwarded)
	return true
}

// write writes e as a stale response. The header of w is replaced, except
// for pre, the fields set before the handler ran.
func (e *entry) write(w http.ResponseWriter, r *http.Request, pre http.Header, now time.Time, fwdStatus int) {
	h := w.Header()
	clear(h)
	for k, v := range pre {
		h[k] = v
	}
	for k, v := range e.staleHeader(now, fwdStatus) {
		h[k] = v
	}
	httpx.AddDegraded(h, staleReason) // after the reasons outer middleware gave
	w.WriteHeader(e.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(e.body)
	}
}

// errCanceled reports whether err is the caller's own cancellation, after
// which serving a stale response helps no one.
func errCanceled(r *http.Request, err error) bool {
	return errors.Is(err, context.Canceled) && r.Context().Err() != nil
}
