package authfallback

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Revocations is a source of revoked tokens, checked on every verification,
// including verifications answered from the verified-token cache. Revoked
// must be fast and must not block: it runs on the hot path of every
// request. An implementation backed by Redis or a database keeps a local
// snapshot that it refreshes in the background, like [RevocationList].
//
// Revoked reports whether a token with subject sub, ID jti (either may be
// empty) and issue time iat (zero if the token has none) is revoked, and if
// so which rule matched: [RevokedID] or [RevokedSubject]. A subject revoked
// before time T revokes every token of that subject issued at or before T,
// and every token of that subject without iat.
//
// Implementations must be safe for concurrent use. An implementation that
// can be out of date may also have a method Stale() bool (as
// [RevocationList] has): while it reports true, the Verifier marks every
// Result it accepts degraded with [ReasonRevocationsStale], so the
// fallback policy applies instead of revocation failing open silently.
type Revocations interface {
	Revoked(sub, jti string, iat time.Time) (revoked bool, rule string)
}

// staleReporter is the optional interface of a Revocations source that
// knows when it is out of date.
type staleReporter interface {
	Stale() bool
}

// ReasonRevocationsStale is the Result.Reason of a token accepted while
// the Revocations source reports it is stale (never loaded, or older than
// its MaxStaleness): revocations may be missed, so the fallback policy
// narrows the Result.
const ReasonRevocationsStale = "revocations-stale"

// Rules reported by [Revocations.Revoked].
const (
	// RevokedID: the token's "jti" is on the list.
	RevokedID = "jti-revoked"
	// RevokedSubject: the token's "sub" is on the list and the token was
	// issued at or before the subject's revoked-before time (or has no iat).
	RevokedSubject = "subject-revoked"
)

// Limits of a revocation list read from outside.
const (
	// MaxRevocationListSize bounds a revocation list document or its cache
	// file, in bytes.
	MaxRevocationListSize = 8 << 20
	// MaxRevocationEntryLength bounds one "jti" or "sub" value.
	MaxRevocationEntryLength = 1024
)

// ErrInvalidRevocationList is the error of a revocation list document that
// is not in the format described at [RevocationList]. Such a document never
// replaces the last good list.
var ErrInvalidRevocationList = errors.New("authfallback: invalid revocation list")

// revSnapshot is an immutable set of revocations, swapped atomically.
type revSnapshot struct {
	jti map[string]struct{}
	sub map[string]time.Time
}

func (s *revSnapshot) revoked(sub, jti string, iat time.Time) (bool, string) {
	if s == nil {
		return false, ""
	}
	if jti != "" {
		if _, ok := s.jti[jti]; ok {
			return true, RevokedID
		}
	}
	if sub != "" {
		if before, ok := s.sub[sub]; ok && (iat.IsZero() || !iat.After(before)) {
			return true, RevokedSubject
		}
	}
	return false, ""
}

// revListDoc is the JSON form of a revocation list.
type revListDoc struct {
	JTI *[]string          `json:"jti"`
	Sub *map[string]string `json:"sub"`
}

// parseRevocationList parses a revocation list document (see
// RevocationList). A document must be a JSON object with a "jti" array or a
// "sub" object (or both); "{}", "null" or anything else is refused.
func parseRevocationList(b []byte) (*revSnapshot, error) {
	if len(b) > MaxRevocationListSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalidRevocationList, MaxRevocationListSize)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return nil, fmt.Errorf("%w: not a JSON object", ErrInvalidRevocationList)
	}
	d, err := decodeRevListDoc(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRevocationList, err)
	}
	if d.JTI == nil && d.Sub == nil {
		return nil, fmt.Errorf(`%w: neither "jti" nor "sub"`, ErrInvalidRevocationList)
	}
	s := &revSnapshot{}
	if d.JTI != nil {
		s.jti = make(map[string]struct{}, len(*d.JTI))
		for _, j := range *d.JTI {
			if j == "" || len(j) > MaxRevocationEntryLength {
				return nil, fmt.Errorf(`%w: empty or overlong "jti" entry`, ErrInvalidRevocationList)
			}
			s.jti[j] = struct{}{}
		}
	}
	if d.Sub != nil {
		s.sub = make(map[string]time.Time, len(*d.Sub))
		for k, v := range *d.Sub {
			if k == "" || len(k) > MaxRevocationEntryLength {
				return nil, fmt.Errorf(`%w: empty or overlong "sub" entry`, ErrInvalidRevocationList)
			}
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil || t.IsZero() {
				return nil, fmt.Errorf(`%w: "sub" %q: revoked-before is not an RFC 3339 time`, ErrInvalidRevocationList, k)
			}
			s.sub[k] = t.UTC()
		}
	}
	return s, nil
}

// decodeRevListDoc decodes a revocation list strictly: member names match
// exactly ("jti" and "sub", case-sensitive; encoding/json would also take
// "JTI"), a member that differs from them only in case is refused, a
// member named twice (at the top or among the subjects) is refused, other
// members are ignored, and nothing may follow the object.
func decodeRevListDoc(b []byte) (revListDoc, error) {
	var d revListDoc
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return d, errors.New("not a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return d, err
		}
		name, _ := t.(string)
		if seen[name] {
			return d, fmt.Errorf("member %q named twice", name)
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return d, err
		}
		switch {
		case name == "jti":
			if err := json.Unmarshal(raw, &d.JTI); err != nil {
				return d, fmt.Errorf(`"jti": %w`, err)
			}
		case name == "sub":
			if duplicateMembers(raw) {
				return d, errors.New(`"sub": a subject named twice`)
			}
			if err := json.Unmarshal(raw, &d.Sub); err != nil {
				return d, fmt.Errorf(`"sub": %w`, err)
			}
		case strings.EqualFold(name, "jti") || strings.EqualFold(name, "sub"):
			return d, fmt.Errorf(`member %q: the names are "jti" and "sub", in lower case`, name)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return d, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return d, errors.New("data after the object")
	}
	return d, nil
}

// marshal returns the canonical JSON form of s (sorted, both members
// present), as written to a cache file.
func (s *revSnapshot) marshal() []byte {
	jti := make([]string, 0, len(s.jti))
	for j := range s.jti {
		jti = append(jti, j)
	}
	sort.Strings(jti)
	sub := make(map[string]string, len(s.sub))
	for k, t := range s.sub {
		sub[k] = t.UTC().Format(time.RFC3339Nano)
	}
	b, _ := json.Marshal(struct {
		JTI []string          `json:"jti"`
		Sub map[string]string `json:"sub"`
	}{jti, sub}) // cannot fail: strings only
	return b
}

// revDiff returns the revocations in next that are not in prev: new jti
// entries, new subjects, and subjects whose revoked-before time moved.
func revDiff(prev, next *revSnapshot) []RevocationEvent {
	var ev []RevocationEvent
	if next == nil {
		return nil
	}
	for j := range next.jti {
		if prev != nil {
			if _, ok := prev.jti[j]; ok {
				continue
			}
		}
		ev = append(ev, RevocationEvent{ID: j})
	}
	for s, t := range next.sub {
		if prev != nil {
			if pt, ok := prev.sub[s]; ok && pt.Equal(t) {
				continue
			}
		}
		ev = append(ev, RevocationEvent{Subject: s, RevokedBefore: t})
	}
	return ev
}

// RevocationEvent describes one revocation seen for the first time: either
// ID is set (a revoked "jti"), or Subject and RevokedBefore are.
type RevocationEvent struct {
	// ID is the revoked "jti".
	ID string
	// Subject is the revoked "sub".
	Subject string
	// RevokedBefore: tokens of Subject issued at or before it are revoked.
	RevokedBefore time.Time
}

// revocationNotifier is implemented by the built-in sources, so that
// Config.OnRevocation can be wired by New.
type revocationNotifier interface {
	subscribe(h func(RevocationEvent)) (unsubscribe func())
}

// revHooks is a set of OnRevocation hooks added by Verifiers. The zero
// value is empty.
type revHooks struct {
	mu    sync.Mutex
	next  int
	hooks atomic.Pointer[map[int]func(RevocationEvent)]
}

func (r *revHooks) subscribe(h func(RevocationEvent)) func() {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := r.next
	r.next++
	m := map[int]func(RevocationEvent){id: h}
	if old := r.hooks.Load(); old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	r.hooks.Store(&m)
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		n := map[int]func(RevocationEvent){}
		for k, v := range *r.hooks.Load() {
			if k != id {
				n[k] = v
			}
		}
		r.hooks.Store(&n)
	}
}

// notify calls every hook with every event; no lock is held.
func (r *revHooks) notify(evs []RevocationEvent) {
	m := r.hooks.Load()
	if m == nil {
		return
	}
	for _, h := range *m {
		for _, ev := range evs {
			h(ev)
		}
	}
}

// MemoryRevocations is an in-memory [Revocations]. Reads are lock-free
// (an atomically swapped immutable snapshot); each write copies the
// snapshot, so it suits small lists, tests, and serves as the model for a
// source backed by Redis or a database: poll the store in the background,
// build a snapshot, swap it in.
//
// The zero value is an empty list, ready to use. MemoryRevocations is safe
// for concurrent use; concurrent writes are serialized by a compare-and-swap
// loop.
type MemoryRevocations struct {
	snap  atomic.Pointer[revSnapshot]
	hooks revHooks
}

var (
	_ Revocations        = (*MemoryRevocations)(nil)
	_ revocationNotifier = (*MemoryRevocations)(nil)
)

func (m *MemoryRevocations) subscribe(h func(RevocationEvent)) func() { return m.hooks.subscribe(h) }

// Revoked implements [Revocations].
func (m *MemoryRevocations) Revoked(sub, jti string, iat time.Time) (bool, string) {
	return m.snap.Load().revoked(sub, jti, iat)
}

// RevokeID revokes the token with "jti" id.
// A Verifier's Config.OnRevocation is called for it.
func (m *MemoryRevocations) RevokeID(id string) {
	m.update(func(s *revSnapshot) { s.jti[id] = struct{}{} })
	m.hooks.notify([]RevocationEvent{{ID: id}})
}

// RevokeSubject revokes every token of sub issued at or before before.
// A later call for the same subject replaces the time.
// A Verifier's Config.OnRevocation is called for it.
func (m *MemoryRevocations) RevokeSubject(sub string, before time.Time) {
	m.update(func(s *revSnapshot) { s.sub[sub] = before.UTC() })
	m.hooks.notify([]RevocationEvent{{Subject: sub, RevokedBefore: before.UTC()}})
}

// Remove lifts the revocation of the "jti" id and of the subject sub
// (either may be empty).
func (m *MemoryRevocations) Remove(sub, id string) {
	m.update(func(s *revSnapshot) {
		delete(s.jti, id)
		delete(s.sub, sub)
	})
}

func (m *MemoryRevocations) update(f func(*revSnapshot)) {
	for {
		old := m.snap.Load()
		n := &revSnapshot{jti: map[string]struct{}{}, sub: map[string]time.Time{}}
		if old != nil {
			for k := range old.jti {
				n.jti[k] = struct{}{}
			}
			for k, v := range old.sub {
				n.sub[k] = v
			}
		}
		f(n)
		if m.snap.CompareAndSwap(old, n) {
			return
		}
	}
}

// revBackoff returns the delay before retry number attempt (from 1): base
// doubling, capped at max, with equal jitter (half fixed, half random).
func revBackoff(attempt int, base, max time.Duration) time.Duration {
	d := base
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	half := d / 2
	return half + rand.N(half+1)
}
