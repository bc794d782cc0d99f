package authfallback

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// StateStore holds the outage state that a fleet of Verifiers shares, so
// that a replica started during an outage on an empty disk verifies at once,
// the grace window holds behind a load balancer and across restarts, and
// reconciliation sees what every replica accepted degraded. Implementations
// are [NewMemoryState] (one process), and the Redis and PostgreSQL stores
// of the holdfast driver modules (redisstore.NewAuthState,
// pgstore.NewAuthState); each passes the conformance suite of
// authfallback/statetest.
//
// A store keeps opaque records; the Verifier applies the integrity rules: a
// key set record is the same document as Config.CacheFile (bound to the
// issuer and its JWKS URLs, never empty, refused if invalid), and a key
// replaced under a known kid is audited. Records carry token hashes, never
// tokens. Implementations must be safe for concurrent use by many
// goroutines and many processes.
type StateStore interface {
	// LoadKeys returns the key set record of issuer, and false if there is
	// none.
	LoadKeys(ctx context.Context, issuer string) (KeySetRecord, bool, error)
	// SaveKeys stores rec as the key set record of rec.Issuer unless the
	// record stored already has a FetchedAt at or after rec.FetchedAt (an
	// older set never replaces a newer one), and reports whether it
	// stored it. A record with an empty Doc or Issuer, or a zero
	// FetchedAt, is an error.
	SaveKeys(ctx context.Context, rec KeySetRecord) (bool, error)
	// AddSeen records tokens seen valid. A token already recorded keeps
	// its first record (the earliest SeenAt). A record may be forgotten
	// after its Expires.
	AddSeen(ctx context.Context, recs []SeenToken) error
	// Seen returns the record of the token whose TokenHash is hash, and
	// false if there is none (or it has expired).
	Seen(ctx context.Context, hash string) (SeenToken, bool, error)
	// AddDegraded merges degraded acceptances into the record: for a
	// (Issuer, TokenHash) recorded already, Count is added, FirstAccepted
	// is the earliest and LastAccepted the latest, Expires the latest;
	// the other fields are those of the first record. A record may be
	// forgotten after its Expires.
	AddDegraded(ctx context.Context, recs []DegradedAcceptance) error
	// TakeDegraded removes and returns up to limit records of issuer
	// (limit > 0), so that each is reconciled by one replica only: two
	// concurrent calls never return the same record.
	TakeDegraded(ctx context.Context, issuer string, limit int) ([]DegradedAcceptance, error)
}

// KeySetRecord is the last-known-good key set of an issuer as shared
// through a [StateStore].
type KeySetRecord struct {
	// Issuer is Config.Issuer.
	Issuer string
	// FetchedAt is when the set was fetched from the IdP.
	FetchedAt time.Time
	// Doc is the set, in the format of Config.CacheFile (it names the
	// issuer and JWKS URLs it is bound to).
	Doc []byte
}

// SeenToken records a token that a Verifier saw valid (not degraded): the
// condition of the expired grace window (Policy.ExpiredGrace).
type SeenToken struct {
	// TokenHash is the hex SHA-256 of the token, as Result.TokenHash.
	TokenHash string
	// Issuer is the token's "iss".
	Issuer string
	// SeenAt is when it was first seen valid.
	SeenAt time.Time
	// ExpiresAt is the token's "exp".
	ExpiresAt time.Time
	// Expires is when the record may be forgotten: ExpiresAt plus the
	// grace window.
	Expires time.Time
}

// DegradedAcceptance records a token accepted degraded, for reconciliation
// (see [ReconcileEvent]).
type DegradedAcceptance struct {
	// Issuer is Config.Issuer of the Verifier that accepted it (offline
	// tokens included), which reconciles it.
	Issuer string
	// TokenHash, Subject, ID, IssuedAt, ExpiresAt, KeyID, Reason and
	// Scopes are as in ReconcileEvent.
	TokenHash string
	Subject   string
	ID        string
	IssuedAt  time.Time
	ExpiresAt time.Time
	KeyID     string
	// KeyFingerprint identifies the key material that verified the token,
	// so reconciliation notices a key replaced under the same kid.
	KeyFingerprint string
	Reason         string
	Scopes         []string
	// PrimaryID and PrimaryIssuedAt are, for an offline token, the "jti"
	// and "iat" of the primary token it was exchanged for.
	PrimaryID       string
	PrimaryIssuedAt time.Time
	// FirstAccepted, LastAccepted and Count bound and count the
	// acceptances.
	FirstAccepted time.Time
	LastAccepted  time.Time
	Count         int
	// Expires is when the record may be forgotten.
	Expires time.Time
}

// ErrStateRecord is the error of a StateStore given a record it refuses
// (empty key set document, missing issuer or hash).
var ErrStateRecord = errors.New("authfallback: invalid state record")

// MemoryState is a [StateStore] in memory, for Verifiers of one process
// (and for tests). Its zero value is not usable; call [NewMemoryState]. It
// is safe for concurrent use.
type MemoryState struct {
	mu       sync.Mutex
	keys     map[string]KeySetRecord
	seen     map[string]SeenToken
	degraded map[[2]string]DegradedAcceptance
	// now is time.Now; tests of the conformance suite run in real time.
	now func() time.Time
}

var _ StateStore = (*MemoryState)(nil)

// NewMemoryState returns an empty MemoryState.
func NewMemoryState() *MemoryState {
	return &MemoryState{
		keys: map[string]KeySetRecord{}, seen: map[string]SeenToken{},
		degraded: map[[2]string]DegradedAcceptance{}, now: time.Now,
	}
}

// LoadKeys implements [StateStore].
func (m *MemoryState) LoadKeys(ctx context.Context, issuer string) (KeySetRecord, bool, error) {
	if err := ctx.Err(); err != nil {
		return KeySetRecord{}, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.keys[issuer]
	r.Doc = slices.Clone(r.Doc)
	return r, ok, nil
}

// SaveKeys implements [StateStore].
func (m *MemoryState) SaveKeys(ctx context.Context, rec KeySetRecord) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if err := CheckKeySetRecord(rec); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.keys[rec.Issuer]; ok && !rec.FetchedAt.After(old.FetchedAt) {
		return false, nil
	}
	rec.Doc = slices.Clone(rec.Doc)
	m.keys[rec.Issuer] = rec
	return true, nil
}

// AddSeen implements [StateStore].
func (m *MemoryState) AddSeen(ctx context.Context, recs []SeenToken) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range recs {
		if r.TokenHash == "" {
			return ErrStateRecord
		}
		if old, ok := m.seen[r.TokenHash]; ok && now.Before(old.Expires) {
			continue
		}
		m.seen[r.TokenHash] = r
	}
	if len(m.seen) > 1024 && len(recs) > 0 {
		for h, r := range m.seen {
			if !now.Before(r.Expires) {
				delete(m.seen, h)
			}
		}
	}
	return nil
}

// Seen implements [StateStore].
func (m *MemoryState) Seen(ctx context.Context, hash string) (SeenToken, bool, error) {
	if err := ctx.Err(); err != nil {
		return SeenToken{}, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.seen[hash]
	if !ok || !m.now().Before(r.Expires) {
		return SeenToken{}, false, nil
	}
	return r, true, nil
}

// AddDegraded implements [StateStore].
func (m *MemoryState) AddDegraded(ctx context.Context, recs []DegradedAcceptance) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range recs {
		if r.TokenHash == "" || r.Issuer == "" {
			return ErrStateRecord
		}
		k := [2]string{r.Issuer, r.TokenHash}
		old, ok := m.degraded[k]
		if !ok || !now.Before(old.Expires) {
			r.Scopes = slices.Clone(r.Scopes)
			m.degraded[k] = r
			continue
		}
		m.degraded[k] = MergeDegraded(old, r)
	}
	return nil
}

// TakeDegraded implements [StateStore].
func (m *MemoryState) TakeDegraded(ctx context.Context, issuer string, limit int) ([]DegradedAcceptance, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []DegradedAcceptance
	for k, r := range m.degraded {
		if k[0] != issuer {
			continue
		}
		delete(m.degraded, k)
		if !now.Before(r.Expires) {
			continue
		}
		out = append(out, r)
		if len(out) >= limit {
			break
		}
	}
	return out, nil
}

// CheckKeySetRecord reports the error a StateStore returns from SaveKeys
// for rec, nil if rec may be stored. Store implementations call it.
func CheckKeySetRecord(rec KeySetRecord) error {
	if rec.Issuer == "" || len(rec.Doc) == 0 || rec.FetchedAt.IsZero() {
		return ErrStateRecord
	}
	return nil
}

// MergeDegraded returns old with the acceptances of add merged in: counts
// added, the earliest FirstAccepted, the latest LastAccepted and Expires.
// Store implementations that merge in Go call it.
func MergeDegraded(old, add DegradedAcceptance) DegradedAcceptance {
	old.Count += add.Count
	if add.FirstAccepted.Before(old.FirstAccepted) {
		old.FirstAccepted = add.FirstAccepted
	}
	if add.LastAccepted.After(old.LastAccepted) {
		old.LastAccepted = add.LastAccepted
	}
	if add.Expires.After(old.Expires) {
		old.Expires = add.Expires
	}
	return old
}
