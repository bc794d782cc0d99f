package idempotency

import (
	"context"
	"errors"
	"hash/maphash"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ErrMemoryFull is returned by the memory store when a new record does not
// fit: every shard's room is taken by in-flight and queued records, which are
// never evicted. The handler answers it like any store failure (503 unless
// FailOpen).
var ErrMemoryFull = errors.New("idempotency: memory store full")

// MemoryConfig configures a MemoryStore.
type MemoryConfig struct {
	// MaxEntries bounds the number of records. If zero, 100000.
	MaxEntries int
	// MaxBytes bounds the approximate memory held by records (keys, stored
	// responses and queued requests). If zero, 256 MiB.
	MaxBytes int64
	// Shards is the number of independently locked shards; the bounds are
	// divided evenly among them. If zero, 16.
	Shards int
	// SweepInterval is how often expired records are removed. If zero, one
	// minute. Expired records are never returned, swept or not.
	SweepInterval time.Duration
}

// inflightGrace is how long an in-flight record outlives its expired lease,
// so that a late duplicate can still take it over (and the fence keeps
// increasing) before the record is swept.
const inflightGrace = time.Minute

// entryOverhead approximates the memory of a record beyond its byte slices.
const entryOverhead = 256

// MemoryStore is a Store in the process's memory, for a single instance (a
// restart forgets everything). It is sharded, bounded by entries and bytes
// and sweeps expired records in the background. When a shard is full it
// evicts the done records that were completed first; in-flight and queued
// records are never evicted, and a new record that does not fit is refused
// with ErrMemoryFull.
//
// Size the bounds for the TTL times the rate of keyed requests: a client
// that sends many keys makes older done records go sooner, and a shard full
// of in-flight records answers ErrMemoryFull (so the handler answers 503)
// rather than growing.
//
// Records it returns share the stored Response and Request with the store:
// treat them as read-only. It is safe for concurrent use. Close stops the
// sweeper.
type MemoryStore struct {
	shards     []memShard
	maxEntries int   // per shard
	maxBytes   int64 // per shard

	seed   maphash.Seed
	hash   func(string) uint64 // for tests: the keys' hash, if not nil
	seq    atomic.Uint64
	qmu    sync.Mutex
	queue  map[string]uint64 // key -> queue position of records that carry a Request
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

// A memShard holds its entries by the hash of their key (see
// MemoryStore.shard): a map with fixed-size keys is smaller, faster to probe
// and has no keys for the collector to scan, and eviction removes an entry
// without reading its key. An entry whose key's hash is another live
// entry's (unlikely: a seeded 64-bit hash) goes to over, by key.
type memShard struct {
	mu    sync.Mutex
	m     map[uint64]*memEntry // by hash
	over  map[string]*memEntry // by key, entries whose hash m holds for another key
	bytes int64
	done  []doneRef // completion order, for eviction and the sweep
	head  int
	dead  int // references in done to removed entries
	// pending lists the records that are not done (in flight or queued),
	// which the sweep walks: a done record's place is in done.
	pending *memEntry
	// lastExpiry is the latest expiry of a done record. disordered is set
	// once a record completed with an earlier expiry (a shorter TTL) than
	// one before it: done is then not in expiry order, and the sweep walks
	// the whole shard.
	lastExpiry time.Time
	disordered bool
	_          [32]byte // keep hot shards on separate cache lines
}

// doneRef is a done entry's place in the eviction queue: the entry, its
// key's hash and its size (a done entry never changes), so that evicting it
// touches the shard's map alone, not the entry. The reference is the
// entry's as long as the map holds that entry.
type doneRef struct {
	e    *memEntry
	hash uint64
	size int64
}

type memEntry struct {
	key        string
	hash       uint64
	prev, next *memEntry // in the shard's pending list, while not done
	rec        Record
	resp       Response
	expires    time.Time
	size       int64
	seq        uint64 // queue position, 0 if the record carries no Request
}

var _ Store = (*MemoryStore)(nil)

func (*MemoryStore) neverBlocks() {}

// NewMemoryStore returns a MemoryStore configured by cfg and starts its
// sweeper. Call Close when done with it.
func NewMemoryStore(cfg MemoryConfig) *MemoryStore {
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 100000
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 256 << 20
	}
	if cfg.Shards <= 0 {
		cfg.Shards = 16
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = time.Minute
	}
	s := &MemoryStore{
		shards:     make([]memShard, cfg.Shards),
		maxEntries: max(1, cfg.MaxEntries/cfg.Shards),
		maxBytes:   max(1, cfg.MaxBytes/int64(cfg.Shards)),
		queue:      make(map[string]uint64),
		seed:       maphash.MakeSeed(),
		closed:     make(chan struct{}),
	}
	for i := range s.shards {
		s.shards[i].m = make(map[uint64]*memEntry)
	}
	s.wg.Add(1)
	go s.sweepLoop(cfg.SweepInterval)
	return s
}

// Close stops the sweeper. The store stays usable; expired records are then
// only removed when they are looked up. Close is idempotent.
func (s *MemoryStore) Close() error {
	s.once.Do(func() { close(s.closed) })
	s.wg.Wait()
	return nil
}

// Len reports the number of records held, expired ones not yet swept
// included.
func (s *MemoryStore) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += sh.len()
		sh.mu.Unlock()
	}
	return n
}

func (s *MemoryStore) sweepLoop(every time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.closed:
			return
		case <-t.C:
			s.sweep(time.Now())
		}
	}
}

// sweep removes the expired records. It costs what it removes, not what
// the store holds: the records that are not done are few (running, queued
// or abandoned), and done records expire in the order they completed, when
// they share a TTL. Only a shard whose done records do not (see
// memShard.disordered) is walked whole.
func (s *MemoryStore) sweep(now time.Time) {
	var stale []qref
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for e := sh.pending; e != nil; {
			next := e.next
			if e.expired(now) {
				if e.seq != 0 {
					stale = append(stale, qref{e.key, e.seq})
				}
				sh.remove(e.hash, e)
			}
			e = next
		}
		for sh.head < len(sh.done) {
			ref := sh.done[sh.head]
			if sh.holds(ref) {
				if !ref.e.expired(now) {
					break
				}
				sh.remove(ref.hash, ref.e) // counts ref as dead
			}
			sh.done[sh.head] = doneRef{}
			sh.head++
			sh.dead--
		}
		if sh.disordered {
			for h, e := range sh.m {
				if e.expired(now) {
					sh.remove(h, e) // done: the others were removed above
				}
			}
			for _, e := range sh.over {
				if e.expired(now) {
					sh.remove(e.hash, e)
				}
			}
			sh.compact()
			sh.reorder()
		} else if sh.head > 0 && (sh.dead > 64 && sh.dead > (len(sh.done)-sh.head)/4 || sh.head > len(sh.done)/2) {
			sh.compact()
		}
		sh.mu.Unlock()
	}
	s.dequeue(stale...)
}

// reorder clears disordered if done is in expiry order again.
func (sh *memShard) reorder() {
	var last time.Time
	for _, ref := range sh.done[sh.head:] {
		if ref.e.expires.Before(last) {
			return
		}
		last = ref.e.expires
	}
	sh.disordered, sh.lastExpiry = false, last
}

// shard returns the shard of key and key's hash there.
func (s *MemoryStore) shard(key string) (*memShard, uint64) {
	var h uint64
	if s.hash == nil {
		h = maphash.String(s.seed, key)
	} else {
		h = s.hash(key)
	}
	return &s.shards[h%uint64(len(s.shards))], h
}

func (e *memEntry) expired(now time.Time) bool {
	return !e.expires.IsZero() && !now.Before(e.expires)
}

func (e *memEntry) held(owner string, fence uint64, now time.Time) bool {
	return e.rec.State == StateInFlight && e.rec.Owner == owner && e.rec.Fence == fence && !e.expired(now)
}

// resize recomputes e.size; respHeader is the headerSize of the response's
// header, if e holds a response.
func (e *memEntry) resize(respHeader int64) {
	n := int64(entryOverhead + len(e.key) + len(e.rec.Fingerprint) + len(e.rec.Owner))
	if r := e.rec.Response; r != nil {
		n += int64(len(r.Body)) + respHeader
	}
	if q := e.rec.Request; q != nil {
		n += int64(len(q.Body)+len(q.URL)+len(q.Method)+len(q.Sealed)) + headerSize(q.Header)
		if c := q.Caller; c != nil {
			n += int64(len(c.Issuer) + len(c.Subject) + len(c.Reason))
			for _, sc := range c.Scopes {
				n += int64(len(sc)) + 16
			}
		}
	}
	e.size = n
}

func headerSize(h http.Header) int64 {
	var n int64
	for k, vs := range h {
		n += int64(len(k)) + 16
		for _, v := range vs {
			n += int64(len(v)) + 16
		}
	}
	return n
}

func (sh *memShard) len() int { return len(sh.m) + len(sh.over) }

// get returns the entry under key, whose hash is h, if any.
func (sh *memShard) get(h uint64, key string) *memEntry {
	if e := sh.m[h]; e != nil && e.key == key {
		return e
	}
	if len(sh.over) == 0 {
		return nil
	}
	return sh.over[key]
}

// lookup returns the live entry under key, whose hash is h, removing an
// expired one. It returns the queue position of a removed entry, if it had
// one.
func (sh *memShard) lookup(h uint64, key string, now time.Time) (e *memEntry, stale []qref) {
	e = sh.get(h, key)
	if e != nil && e.expired(now) {
		sh.remove(h, e)
		if e.seq != 0 {
			stale = []qref{{key, e.seq}}
		}
		if sh.dead > 64 && sh.dead > (len(sh.done)-sh.head)/4 {
			// The eviction queue holds references to records removed
			// here (keys used again after their records expired): drop
			// them, so that they do not keep removed records alive.
			sh.compact()
		}
		return nil, stale
	}
	return e, nil
}

// remove removes e, whose key's hash is h. A done entry's reference in the
// eviction queue stays until it is popped or compacted: dead counts them.
func (sh *memShard) remove(h uint64, e *memEntry) {
	if len(sh.over) == 0 || sh.m[h] == e {
		delete(sh.m, h)
	} else {
		delete(sh.over, e.key)
	}
	sh.bytes -= e.size
	if e.rec.State == StateDone {
		sh.dead++
	} else {
		sh.unlink(e)
	}
}

// link adds e, not done, to the pending list.
func (sh *memShard) link(e *memEntry) {
	e.prev, e.next = nil, sh.pending
	if sh.pending != nil {
		sh.pending.prev = e
	}
	sh.pending = e
}

// unlink removes e from the pending list.
func (sh *memShard) unlink(e *memEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		sh.pending = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	}
	e.prev, e.next = nil, nil
}

// holds reports whether ref is still its entry's: the shard holds the entry.
func (sh *memShard) holds(ref doneRef) bool {
	return sh.m[ref.hash] == ref.e || len(sh.over) > 0 && sh.over[ref.e.key] == ref.e
}

// put adds e, a new record not done, under its key, whose hash is h and
// which the shard does not hold.
func (sh *memShard) put(h uint64, e *memEntry) {
	e.hash = h
	e.resize(0)
	sh.link(e)
	if sh.m[h] == nil {
		sh.m[h] = e
	} else {
		if sh.over == nil {
			sh.over = make(map[string]*memEntry)
		}
		sh.over[e.key] = e
	}
	sh.bytes += e.size
}

// fit evicts done records, first completed first, until the shard holds at
// most maxEntries records and maxBytes, not counting extra. It reports
// whether the bounds hold with extra added.
func (sh *memShard) fit(extraEntries int, extraBytes int64, maxEntries int, maxBytes int64, keep *memEntry) bool {
	for sh.len()+extraEntries > maxEntries || sh.bytes+extraBytes > maxBytes {
		if sh.head >= len(sh.done) {
			sh.compact()
			return false
		}
		ref := sh.done[sh.head]
		sh.done[sh.head] = doneRef{}
		sh.head++
		if sh.head > 1024 && sh.head > len(sh.done)/2 {
			// Drop the consumed half; validity is checked when popped.
			n := copy(sh.done, sh.done[sh.head:])
			clear(sh.done[n:])
			sh.done = sh.done[:n]
			sh.head = 0
		}
		if ref.e == keep {
			// The record just completed is the newest: nothing older is
			// left to evict. Keep its reference for later.
			sh.head--
			sh.done[sh.head] = ref
			return false
		}
		switch {
		case sh.m[ref.hash] == ref.e:
			// The common case, read from the map alone.
			delete(sh.m, ref.hash)
			sh.bytes -= ref.size
		case len(sh.over) > 0 && sh.over[ref.e.key] == ref.e:
			delete(sh.over, ref.e.key)
			sh.bytes -= ref.size
		default:
			sh.dead-- // removed before, counted dead since
		}
	}
	return true
}

// compact drops the eviction queue's references to removed records.
func (sh *memShard) compact() {
	live := sh.done[:0]
	for _, ref := range sh.done[sh.head:] {
		if sh.holds(ref) {
			live = append(live, ref)
		}
	}
	clear(sh.done[len(live):])
	sh.done = live
	sh.head = 0
	sh.dead = 0
}

// qref names a queue position.
type qref struct {
	key string
	seq uint64
}

// dequeue removes positions from the queue unless a newer Enqueue reused
// their key meanwhile.
func (s *MemoryStore) dequeue(refs ...qref) {
	if len(refs) == 0 {
		return
	}
	s.qmu.Lock()
	for _, r := range refs {
		if s.queue[r.key] == r.seq {
			delete(s.queue, r.key)
		}
	}
	s.qmu.Unlock()
}

// Claim implements Store.
func (s *MemoryStore) Claim(_ context.Context, key, fingerprint, owner string, lease time.Duration) (Record, bool, error) {
	now := time.Now()
	sh, h := s.shard(key)
	sh.mu.Lock()
	e, stale := sh.lookup(h, key, now)
	var (
		rec     Record
		claimed bool
		err     error
	)
	switch {
	case e == nil:
		size := int64(entryOverhead + len(key) + len(fingerprint) + len(owner))
		if !sh.fit(1, size, s.maxEntries, s.maxBytes, nil) {
			err = ErrMemoryFull
			break
		}
		e = &memEntry{key: key, rec: Record{
			State:       StateInFlight,
			Fingerprint: fingerprint,
			Owner:       owner,
			Fence:       1,
			LeaseUntil:  now.Add(lease),
			Created:     now,
		}}
		e.expires = e.rec.LeaseUntil.Add(inflightGrace)
		sh.put(h, e)
		rec, claimed = e.rec, true
	case e.rec.State == StateInFlight && !now.Before(e.rec.LeaseUntil) && e.rec.Fingerprint == fingerprint:
		e.rec.Owner = owner
		e.rec.Fence++
		e.rec.LeaseUntil = now.Add(lease)
		if e.rec.Request == nil {
			e.expires = e.rec.LeaseUntil.Add(inflightGrace)
		} else if e.expires.Before(e.rec.LeaseUntil) {
			// A queued request taken over near its TTL lives out the
			// lease, as Extend and ClaimQueued make it (and the shared
			// stores do).
			e.expires = e.rec.LeaseUntil
		}
		sh.bytes -= e.size
		e.resize(0)
		sh.bytes += e.size
		rec, claimed = e.rec, true
	default:
		rec = e.rec
	}
	sh.mu.Unlock()
	s.dequeue(stale...)
	return rec, claimed, err
}

// Extend implements Store.
func (s *MemoryStore) Extend(_ context.Context, key, owner string, fence uint64, lease time.Duration) error {
	now := time.Now()
	sh, h := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.get(h, key)
	if e == nil || !e.held(owner, fence, now) {
		return ErrNotOwner
	}
	e.rec.LeaseUntil = now.Add(lease)
	if e.rec.Request == nil {
		e.expires = e.rec.LeaseUntil.Add(inflightGrace)
	} else if e.expires.Before(e.rec.LeaseUntil) {
		e.expires = e.rec.LeaseUntil
	}
	return nil
}

// Complete implements Store.
func (s *MemoryStore) Complete(_ context.Context, key, owner string, fence uint64, resp Response, ttl time.Duration) error {
	stored := Response{Status: resp.Status, Header: resp.Header.Clone(), Body: slices.Clone(resp.Body)}
	return s.completeOwned(key, owner, fence, stored, headerSize(stored.Header), ttl)
}

// completeOwned is Complete with a response that the store may keep, and
// the headerSize of its header.
func (s *MemoryStore) completeOwned(key, owner string, fence uint64, stored Response, headerBytes int64, ttl time.Duration) error {
	now := time.Now()
	sh, h := s.shard(key)
	sh.mu.Lock()
	e := sh.get(h, key)
	if e != nil && !e.expired(now) && e.rec.State == StateDone && e.rec.Owner == owner && e.rec.Fence == fence {
		sh.mu.Unlock()
		return nil // completed already: a retry
	}
	if e == nil || !e.held(owner, fence, now) {
		sh.mu.Unlock()
		return ErrNotOwner
	}
	var done []qref
	if e.seq != 0 {
		done = []qref{{key, e.seq}}
	}
	sh.bytes -= e.size
	sh.unlink(e)
	e.rec.State = StateDone
	// The owner stays: it tells a retried Complete from another's.
	e.rec.LeaseUntil = time.Time{}
	e.resp = stored // a done entry never changes again: Records may point to it
	e.rec.Response = &e.resp
	e.rec.Request = nil
	e.seq = 0
	e.expires = now.Add(ttl)
	e.resize(headerBytes)
	sh.bytes += e.size
	sh.done = append(sh.done, doneRef{e: e, hash: h, size: e.size})
	if e.expires.Before(sh.lastExpiry) {
		sh.disordered = true
	} else {
		sh.lastExpiry = e.expires
	}
	sh.fit(0, 0, s.maxEntries, s.maxBytes, e)
	sh.mu.Unlock()
	s.dequeue(done...)
	return nil
}

// Release implements Store.
func (s *MemoryStore) Release(_ context.Context, key, owner string, fence uint64) error {
	now := time.Now()
	sh, h := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.get(h, key)
	if e == nil || !e.held(owner, fence, now) {
		return ErrNotOwner
	}
	if e.rec.Request != nil {
		e.rec.State = StateQueued
		e.rec.Owner = ""
		e.rec.LeaseUntil = time.Time{}
		return nil
	}
	sh.remove(h, e)
	return nil
}

// Requeue implements Store.
func (s *MemoryStore) Requeue(_ context.Context, key, owner string, fence uint64) error {
	now := time.Now()
	sh, h := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.get(h, key)
	if e == nil || !e.held(owner, fence, now) || e.rec.Request == nil {
		return ErrNotOwner
	}
	e.rec.State = StateQueued
	e.rec.Owner = ""
	e.rec.LeaseUntil = time.Time{}
	e.rec.Attempts++
	return nil
}

// Get implements Store.
func (s *MemoryStore) Get(_ context.Context, key string) (Record, bool, error) {
	now := time.Now()
	sh, h := s.shard(key)
	sh.mu.Lock()
	e := sh.get(h, key)
	if e == nil || e.expired(now) {
		sh.mu.Unlock()
		return Record{}, false, nil
	}
	rec := e.rec
	sh.mu.Unlock()
	return rec, true, nil
}

// Enqueue implements Store.
func (s *MemoryStore) Enqueue(_ context.Context, key, fingerprint string, req Request, ttl time.Duration) (Record, bool, error) {
	now := time.Now()
	stored := &Request{Method: req.Method, URL: req.URL, Header: req.Header.Clone(), Body: slices.Clone(req.Body),
		Sealed: slices.Clone(req.Sealed)}
	if c := req.Caller; c != nil {
		stored.Caller = &Caller{Issuer: c.Issuer, Subject: c.Subject, Scopes: slices.Clone(c.Scopes), Reason: c.Reason}
	}
	sh, h := s.shard(key)
	sh.mu.Lock()
	e, stale := sh.lookup(h, key, now)
	if e != nil {
		rec := e.rec
		sh.mu.Unlock()
		return rec, false, nil
	}
	// A stale position of an expired record under key is replaced below.
	e = &memEntry{
		key: key,
		rec: Record{
			State:       StateQueued,
			Fingerprint: fingerprint,
			Request:     stored,
			Created:     now,
		},
		expires: now.Add(ttl),
	}
	e.resize(0)
	if !sh.fit(1, e.size, s.maxEntries, s.maxBytes, nil) {
		sh.mu.Unlock()
		s.dequeue(stale...)
		return Record{}, false, ErrMemoryFull
	}
	seq := s.seq.Add(1)
	e.seq = seq
	sh.put(h, e)
	rec := e.rec
	sh.mu.Unlock()
	s.qmu.Lock()
	s.queue[key] = seq
	s.qmu.Unlock()
	return rec, true, nil
}

// ClaimQueued implements Store.
func (s *MemoryStore) ClaimQueued(_ context.Context, owner string, lease time.Duration, limit int) ([]Queued, error) {
	if limit <= 0 {
		return nil, nil
	}
	s.qmu.Lock()
	items := make([]qref, 0, len(s.queue))
	for k, seq := range s.queue {
		items = append(items, qref{k, seq})
	}
	s.qmu.Unlock()
	slices.SortFunc(items, func(a, b qref) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})

	var (
		out   []Queued
		stale []qref
	)
	now := time.Now()
	for _, it := range items {
		if len(out) == limit {
			break
		}
		sh, h := s.shard(it.key)
		sh.mu.Lock()
		e := sh.get(h, it.key)
		switch {
		case e == nil || e.seq != it.seq:
			stale = append(stale, it)
		case e.expired(now):
			sh.remove(h, e)
			stale = append(stale, it)
		case e.rec.State == StateQueued,
			e.rec.State == StateInFlight && e.rec.Request != nil && !now.Before(e.rec.LeaseUntil):
			e.rec.State = StateInFlight
			e.rec.Owner = owner
			e.rec.Fence++
			e.rec.LeaseUntil = now.Add(lease)
			if e.expires.Before(e.rec.LeaseUntil) {
				e.expires = e.rec.LeaseUntil
			}
			out = append(out, Queued{Key: it.key, Record: e.rec})
		}
		sh.mu.Unlock()
	}
	s.dequeue(stale...)
	return out, nil
}
