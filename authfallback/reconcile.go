package authfallback

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// FindingKeyRemoved is the ReconcileEvent.Finding of a token accepted
// degraded whose signing key is no longer in the IdP's key set (removed or
// replaced while the IdP was unreachable, e.g. after a compromise).
const FindingKeyRemoved = "key-removed"

// FindingKeyReplaced is the ReconcileEvent.Finding of a token accepted
// degraded whose signing key's kid is still in the IdP's key set, but
// with other key material: the key was replaced under the same kid while
// the IdP was unreachable (treat it like FindingKeyRemoved).
const FindingKeyReplaced = "key-replaced"

// ReconcileEvent reports a token that was accepted degraded and that
// reconciliation found revoked or invalid once the IdP was back. The
// service should end the subject's session and undo or flag what the
// requests made with this token did between FirstAccepted and
// LastAccepted.
type ReconcileEvent struct {
	// Finding is why: RevokedID, RevokedSubject, FindingKeyRemoved or
	// FindingKeyReplaced.
	Finding string
	// Subject, ID ("jti"), IssuedAt and ExpiresAt are the token's.
	Subject   string
	ID        string
	IssuedAt  time.Time
	ExpiresAt time.Time
	// TokenHash is the hex SHA-256 of the token, as in the audit log.
	TokenHash string
	// KeyID is the "kid" of the key that verified the token.
	KeyID string
	// Reason is the degraded reason of the first acceptance (e.g.
	// "jwks-unreachable", "offline-token", "expired-grace").
	Reason string
	// Scopes are the scopes the degraded requests carried (after
	// narrowing).
	Scopes []string
	// FirstAccepted and LastAccepted bound the degraded acceptances of the
	// token; Accepted counts them.
	FirstAccepted time.Time
	LastAccepted  time.Time
	Accepted      int
	// Issuer is the Config.Issuer of the Verifier.
	Issuer string
}

// degradedRecord is the bounded record of tokens accepted degraded, kept
// for reconciliation, by token hash.
type degradedRecord struct {
	max    int
	mu     sync.Mutex
	m      map[string]*degradedEntry
	missed int
}

type degradedEntry struct {
	res   *Result // the degraded copy of the first acceptance
	first time.Time
	last  time.Time
	count int
}

func newDegradedRecord(max int) *degradedRecord {
	return &degradedRecord{max: max, m: make(map[string]*degradedEntry)}
}

func (r *degradedRecord) add(res *Result, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.m[res.TokenHash]; e != nil {
		e.last = now
		e.count++
		return
	}
	if len(r.m) >= r.max {
		r.missed++
		return
	}
	r.m[res.TokenHash] = &degradedEntry{res: res, first: now, last: now, count: 1}
}

// take empties the record and returns what it held.
func (r *degradedRecord) take() (map[string]*degradedEntry, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, missed := r.m, r.missed
	r.m, r.missed = make(map[string]*degradedEntry), 0
	return m, missed
}

func (r *degradedRecord) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

// refresher is the optional interface of a Revocations source that can be
// refreshed on demand (RevocationList has it).
type refresher interface {
	Refresh(ctx context.Context) error
}

// reconcile runs after a successful key refresh when tokens were accepted
// degraded: it refreshes the revocation source first (if it can), then
// re-checks every recorded token against the revocations and the new key
// set, and reports each one found revoked or invalid (audit log and
// OnReconcile). It runs on the refreshing goroutine, without any lock.
func (v *Verifier) reconcile(ctx context.Context, ks *keySet) {
	recs, missed := v.records.take()
	if len(recs) == 0 && missed == 0 {
		return
	}
	if r, ok := v.cfg.Revocations.(refresher); ok {
		rctx, cancel := context.WithTimeout(ctx, v.cfg.fetchTimeout())
		err := r.Refresh(rctx)
		cancel()
		if err != nil {
			v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: reconcile: revocations not refreshed, using the last list",
				slog.String("error", err.Error()))
		}
	}
	findings := 0
	for _, e := range recs {
		res := e.res
		finding := ""
		if r := v.cfg.Revocations; r != nil {
			if revoked, rule := v.revoked(r, res); revoked {
				finding = rule
			}
		}
		if finding == "" && res.Reason != ReasonOfflineToken {
			switch k := ks.lookup(res.KeyID); {
			case k == nil:
				finding = FindingKeyRemoved
			case k.fp != res.keyFP:
				finding = FindingKeyReplaced
			}
		}
		if finding == "" {
			continue
		}
		findings++
		ev := ReconcileEvent{
			Finding: finding, Subject: res.Subject, ID: res.ID, IssuedAt: res.IssuedAt, ExpiresAt: res.ExpiresAt,
			TokenHash: res.TokenHash, KeyID: res.KeyID, Reason: res.Reason, Scopes: res.Scopes,
			FirstAccepted: e.first, LastAccepted: e.last, Accepted: e.count,
		}
		v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: reconcile finding",
			slog.String("finding", finding), slog.String("token_hash", res.TokenHash),
			slog.String("sub", res.Subject), slog.String("jti", res.ID), slog.String("reason", res.Reason),
			slog.Time("first_accepted", e.first), slog.Time("last_accepted", e.last), slog.Int("accepted", e.count))
		if h := v.cfg.OnReconcile; h != nil {
			h(ev)
		}
	}
	lvl := slog.LevelInfo
	if missed > 0 {
		lvl = slog.LevelWarn
	}
	v.audit.LogAttrs(ctx, lvl, "authfallback: reconcile done",
		slog.Int("checked", len(recs)), slog.Int("findings", findings), slog.Int("not_recorded", missed))
}
