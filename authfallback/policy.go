package authfallback

import (
	"context"
	"time"
)

// admit is the policy check point. It runs after every successful
// verification, fresh or from the verified-token cache, with Degraded and
// Reason already set, and before the Result is returned. It may refuse the
// token (return an error; wrap ErrInvalidToken for a 401) or return a
// narrowed copy of res; it must not modify res, which may be cached.
//
// The fallback policy (AllowedScopes, MaxOfflineDuration, grace windows,
// revocation) plugs in here. Today it admits everything.
func (v *Verifier) admit(_ context.Context, res *Result, _ time.Time) (*Result, error) {
	return res, nil
}
