package authfallback

import "time"

// Status is a snapshot of a Verifier's state, for health checks.
type Status struct {
	// Fallback is true while refreshes fail and tokens are verified with the
	// last-known-good keys.
	Fallback bool
	// FallbackSince is when fallback mode began, zero when not in it.
	FallbackSince time.Time
	// Degraded is true when tokens verified now are marked degraded: in
	// fallback mode, or while the key set is older than two
	// RefreshIntervals.
	Degraded bool
	// Reason is the degraded reason, "" when not degraded.
	Reason string
	// LastRefresh is when the key set in use was fetched from the IdP
	// (possibly in an earlier run, through CacheFile). Zero if never.
	LastRefresh time.Time
	// KeyAge is the age of the key set in use.
	KeyAge time.Duration
	// KeyCount is the number of usable keys in the set.
	KeyCount int
	// Source is the URL the key set came from.
	Source string
	// Stale is true when the key set is older than MaxStaleness, or there
	// is none: verification fails.
	Stale bool
	// LastAttempt is when a refresh was last tried.
	LastAttempt time.Time
	// NextAttempt is when the next refresh is scheduled; never in the past
	// (a refresh that is due or running reports the time of the call).
	// Zero without JWKSURLs.
	NextAttempt time.Time
	// LastError is the error of the last refresh, nil if it succeeded.
	LastError error
	// Failures counts consecutive failed refreshes.
	Failures int
	// CachedTokens is the number of entries in the verified-token cache.
	CachedTokens int
	// FallbackDeadline is when degraded acceptance stops in the current
	// fallback mode (Policy.MaxOfflineDuration), or while the keys are
	// unconfirmed (ReasonJWKSStale); zero otherwise.
	FallbackDeadline time.Time
	// DegradedRecords is the number of tokens accepted degraded and not
	// yet reconciled.
	DegradedRecords int
	// Issuer is the Config.Issuer of the Verifier.
	Issuer string
	// Introspection is the state of Config.Introspection, nil without it.
	Introspection *IntrospectionStatus
}

// Status returns the current state of v.
func (v *Verifier) Status() Status {
	now := time.Now()
	var s Status
	if ks := v.keys.Load(); ks != nil {
		s.LastRefresh = ks.fetchedAt
		s.KeyAge = now.Sub(ks.fetchedAt)
		s.KeyCount = len(ks.byKID)
		s.Source = ks.source
		s.Stale = s.KeyAge > v.staleAfter
	} else {
		s.Stale = true
	}
	v.mu.Lock()
	if fb := v.fb.Load(); fb != nil {
		s.Fallback = true
		s.FallbackSince = fb.since
		s.Reason = fb.reason
		s.FallbackDeadline = v.offlineDeadline(fb, v.keys.Load())
	}
	s.LastAttempt = v.lastAttempt
	s.LastError = v.lastErr
	s.Failures = v.failures
	v.mu.Unlock()
	if !s.Fallback {
		ks := v.keys.Load()
		s.Reason = v.degradedReason(ks, now)
		if s.Reason == ReasonJWKSStale {
			s.FallbackDeadline = v.offlineDeadline(nil, ks)
		}
		if s.Reason == "" && v.revocationsStale() {
			s.Reason = ReasonRevocationsStale
		}
	}
	s.Degraded = s.Reason != ""
	if n := v.nextAttempt.Load(); n != 0 {
		s.NextAttempt = time.Unix(0, n)
		if s.NextAttempt.Before(now) {
			// Due or running now: never report a time in the past.
			s.NextAttempt = now
		}
	}
	s.CachedTokens = v.cache.len()
	s.DegradedRecords = v.records.len()
	v.statusIDP(&s)
	return s
}
