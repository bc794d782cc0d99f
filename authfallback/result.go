package authfallback

import (
	"context"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/holdfast-go/holdfast/internal/caller"
)

// Result is what a verification established about a token. A Result is
// shared between requests that present the same token (see the verified-token
// cache of [Verifier]); treat it as read-only.
type Result struct {
	// Subject is the "sub" claim.
	Subject string
	// Scopes come from "scope" (space-separated string) or "scp" (array of
	// strings).
	Scopes []string
	// Claims are all claims of the token. In a degraded Result they are a
	// copy whose "scope" and "scp" (if present) hold the narrowed Scopes.
	// Only scopes are narrowed: authorise from Scopes / HasScope; a
	// service that authorises from other claims (roles, groups,
	// permissions) must check Degraded itself, as the fallback policy does
	// not touch them.
	Claims jwt.MapClaims
	// Issuer is the "iss" claim.
	Issuer string
	// KeyID is the "kid" header of the key that verified the token.
	KeyID string
	// ExpiresAt is the "exp" claim.
	ExpiresAt time.Time
	// IssuedAt is the "iat" claim, zero if absent.
	IssuedAt time.Time
	// ID is the "jti" claim, empty if absent.
	ID string
	// TokenHash is the hex SHA-256 of the raw token, for audit logs and
	// caches. The raw token itself is never kept.
	TokenHash string
	// RemovedScopes are the token's scopes that the fallback policy
	// stripped from Scopes (not in Policy.AllowedScopes), nil if none.
	RemovedScopes []string
	// Degraded is true when the token was accepted in fallback mode (stale
	// keys, an offline token, a grace window).
	Degraded bool
	// Reason says why the request is degraded: "" when not degraded,
	// otherwise ReasonJWKSUnreachable, ReasonJWKSInvalid, ReasonJWKSStale,
	// ReasonJWKSKeyChanged, ReasonOfflineToken, ReasonExpiredGrace or
	// ReasonRevocationsStale.
	Reason string

	// primaryID and primaryIAT are, for an offline token, the "jti" and
	// "iat" of the primary token it was exchanged for (claims
	// ClaimPrimaryID and ClaimPrimaryIssuedAt); zero otherwise or when the
	// primary had none. Revocation and MaxTokenAge apply to them too.
	primaryID  string
	primaryIAT time.Time
	// keyFP is the fingerprint of the key that verified the token, so
	// that reconciliation notices a key replaced under the same kid.
	keyFP string
	// primaryIssuer is, for an offline token, the "iss" of its primary
	// (ClaimPrimaryIssuer), which names the verified caller.
	primaryIssuer string
	// caller is the verified caller handed to the other packages through
	// the request context (internal/caller); set when the Result is made
	// final (newResult, admit), or by NewContext.
	caller *caller.Caller
}

// HasScope reports whether s is among r.Scopes.
func (r *Result) HasScope(s string) bool {
	for _, x := range r.Scopes {
		if x == s {
			return true
		}
	}
	return false
}

// NewContext returns a copy of ctx that carries r. The verified caller it
// names (issuer, subject, granted scopes, degraded or not) is what
// idempotency scopes its records by and degrade.Stale its stored answers.
func NewContext(ctx context.Context, r *Result) context.Context {
	c := r.caller
	if c == nil || c.Ext != r {
		c = newCaller(r)
	}
	return caller.NewContext(ctx, c)
}

// FromContext returns the Result stored in ctx by [Verifier.Handler] or
// [NewContext], and whether there was one.
//
// A write queued during an outage and replayed later by the idempotency
// package carries no token, only the verified caller recorded when it was
// accepted; for it FromContext returns a Result with that caller's Issuer,
// Subject, Scopes, Degraded and Reason (and no Claims), so a handler that
// authorises from the Result works the same on a replay.
func FromContext(ctx context.Context) (*Result, bool) {
	c := caller.FromContext(ctx)
	if c == nil {
		return nil, false
	}
	if r, ok := c.Ext.(*Result); ok && r != nil {
		return r, true
	}
	if c.Ext != nil || c.Subject == "" {
		return nil, false
	}
	return &Result{
		Issuer: c.Issuer, Subject: c.Subject, Scopes: c.Scopes,
		Degraded: c.Reason != "", Reason: c.Reason, caller: c,
	}, true
}

func newCaller(r *Result) *caller.Caller {
	iss := r.Issuer
	if r.primaryIssuer != "" {
		iss = r.primaryIssuer
	}
	return caller.New(iss, r.Subject, r.Scopes, r.Reason, r)
}
