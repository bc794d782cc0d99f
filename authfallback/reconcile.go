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

// DegradedAuditInterval is how often the audit log repeats the degraded
// acceptance of one token: the first acceptance is written at once, later
// ones at most once per interval, with the count since the last line.
const DegradedAuditInterval = time.Minute

// DefaultMaxDegradedRecordsPerSubject is Config.MaxDegradedRecordsPerSubject
// when zero.
const DefaultMaxDegradedRecordsPerSubject = 64

// degradedRecord is the bounded record of tokens accepted degraded, kept
// for reconciliation, by token hash. It is bounded in all (max) and per
// subject (perSub), so one account cannot crowd out another's entries.
type degradedRecord struct {
	max    int
	perSub int
	mu     sync.Mutex
	m      map[string]*degradedEntry
	subs   map[string]int
	missed int
}

type degradedEntry struct {
	rec DegradedAcceptance
	// pending counts acceptances not yet written to Config.State, since
	// pendingFirst.
	pending      int
	pendingFirst time.Time
	// loggedAt is when the last audit line was written; unlogged counts
	// acceptances since.
	loggedAt time.Time
	unlogged int
}

func newDegradedRecord(max, perSub int) *degradedRecord {
	return &degradedRecord{max: max, perSub: perSub, m: make(map[string]*degradedEntry), subs: map[string]int{}}
}

// add records an acceptance of res and reports whether to write an audit
// line now, and how many acceptances it stands for.
func (r *degradedRecord) add(res *Result, issuer string, expires, now time.Time) (logNow bool, count int, recorded bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.m[res.TokenHash]; e != nil {
		e.rec.LastAccepted = now
		e.rec.Count++
		if e.pending == 0 {
			e.pendingFirst = now
		}
		e.pending++
		e.unlogged++
		if now.Sub(e.loggedAt) < DegradedAuditInterval {
			return false, 0, true
		}
		n := e.unlogged
		e.loggedAt, e.unlogged = now, 0
		return true, n, true
	}
	if len(r.m) >= r.max || r.subs[res.Subject] >= r.perSub {
		r.missed++
		return true, 1, false
	}
	r.subs[res.Subject]++
	r.m[res.TokenHash] = &degradedEntry{
		rec: DegradedAcceptance{
			Issuer: issuer, TokenHash: res.TokenHash, Subject: res.Subject, ID: res.ID,
			IssuedAt: res.IssuedAt, ExpiresAt: res.ExpiresAt, KeyID: res.KeyID, KeyFingerprint: res.keyFP,
			Reason: res.Reason, Scopes: res.Scopes, PrimaryID: res.primaryID, PrimaryIssuedAt: res.primaryIAT,
			FirstAccepted: now, LastAccepted: now, Count: 1, Expires: expires,
		},
		pending: 1, pendingFirst: now, loggedAt: now,
	}
	return true, 1, true
}

// take empties the record and returns what it held.
func (r *degradedRecord) take() ([]DegradedAcceptance, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]DegradedAcceptance, 0, len(r.m))
	for _, e := range r.m {
		out = append(out, e.rec)
	}
	missed := r.missed
	r.m, r.subs, r.missed = make(map[string]*degradedEntry), map[string]int{}, 0
	return out, missed
}

// pendingBatch returns the acceptances not yet written to the shared
// state (each with the count since the last batch) and marks them written.
func (r *degradedRecord) pendingBatch() []DegradedAcceptance {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []DegradedAcceptance
	for _, e := range r.m {
		if e.pending == 0 {
			continue
		}
		d := e.rec
		d.Count, d.FirstAccepted = e.pending, e.pendingFirst
		out = append(out, d)
		e.pending = 0
	}
	return out
}

// unflush gives back a batch that could not be written.
func (r *degradedRecord) unflush(batch []DegradedAcceptance) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range batch {
		if e := r.m[d.TokenHash]; e != nil {
			e.pending += d.Count
			if e.pendingFirst.IsZero() || d.FirstAccepted.Before(e.pendingFirst) {
				e.pendingFirst = d.FirstAccepted
			}
		}
	}
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
	recs, missed := v.takeDegraded(ctx)
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
		res := &Result{Subject: e.Subject, ID: e.ID, IssuedAt: e.IssuedAt, Reason: e.Reason, primaryID: e.PrimaryID, primaryIAT: e.PrimaryIssuedAt}
		finding := ""
		if r := v.cfg.Revocations; r != nil {
			if revoked, rule := v.revoked(r, res); revoked {
				finding = rule
			}
		}
		if finding == "" && e.Reason != ReasonOfflineToken {
			switch k := ks.lookup(e.KeyID); {
			case k == nil:
				finding = FindingKeyRemoved
			case k.fp != e.KeyFingerprint:
				finding = FindingKeyReplaced
			}
		}
		if finding == "" {
			continue
		}
		findings++
		ev := ReconcileEvent{
			Finding: finding, Subject: e.Subject, ID: e.ID, IssuedAt: e.IssuedAt, ExpiresAt: e.ExpiresAt,
			TokenHash: e.TokenHash, KeyID: e.KeyID, Reason: e.Reason, Scopes: e.Scopes,
			FirstAccepted: e.FirstAccepted, LastAccepted: e.LastAccepted, Accepted: e.Count,
		}
		v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: reconcile finding",
			slog.String("finding", finding), slog.String("token_hash", e.TokenHash),
			slog.String("sub", e.Subject), slog.String("jti", e.ID), slog.String("reason", e.Reason),
			slog.Time("first_accepted", e.FirstAccepted), slog.Time("last_accepted", e.LastAccepted), slog.Int("accepted", e.Count))
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
