package authfallback

import (
	"errors"
	"fmt"
)

// Errors returned by [Verifier.Verify]. Match them with errors.Is; the
// returned errors wrap the cause (a jwt/v5 error such as jwt.ErrTokenExpired
// matches too).
var (
	// ErrNoToken: the request carries no bearer token.
	ErrNoToken = errors.New("authfallback: no bearer token")
	// ErrInvalidToken: the token is malformed, too large, signed with an
	// algorithm or key that is not trusted, expired, or for another issuer
	// or audience. Handler answers 401.
	ErrInvalidToken = errors.New("authfallback: invalid token")
	// ErrUnknownKeyID: the token's "kid" is not in the key set. It also
	// matches ErrInvalidToken, except in fallback mode (or while the keys
	// are unconfirmed), where it matches ErrUnavailable instead (503 with
	// Retry-After: a key rotated in during the outage cannot be fetched,
	// the token is not known to be bad). A background refresh is
	// triggered (rate limited); the call is not delayed.
	ErrUnknownKeyID = errors.New("authfallback: unknown key id")
	// ErrUnavailable: no trusted key is available, so no token can be
	// verified; the token is not at fault. Handler answers 503 with
	// Retry-After. ErrNoKeys and ErrKeysTooStale match it.
	ErrUnavailable = errors.New("authfallback: verification unavailable")
	// ErrNoKeys: no key set has ever been obtained (no CacheFile, IdP
	// unreachable since start).
	ErrNoKeys = fmt.Errorf("%w: no key set", ErrUnavailable)
	// ErrKeysTooStale: the last-known-good key set is older than
	// Config.MaxStaleness and no longer trusted (fail closed).
	ErrKeysTooStale = fmt.Errorf("%w: key set older than MaxStaleness", ErrUnavailable)
)

// Token errors that are not exported on their own; all match
// ErrInvalidToken.
var (
	errTokenTooLarge = errors.New("token larger than MaxTokenSize")
	errBadKID        = errors.New(`missing or overlong "kid" header`)
	errCrit          = errors.New(`unsupported "crit" header`)
	errAlgMismatch   = errors.New("token alg does not match the key's alg")
	errIssuer        = errors.New(`wrong or missing "iss"`)
)

// errUnknownKIDInFallback is the error of a token whose kid is not in the
// key set while the keys cannot be confirmed: it matches ErrUnavailable
// (503 with Retry-After) and ErrUnknownKeyID, not ErrInvalidToken.
var errUnknownKIDInFallback = fmt.Errorf("%w: %w while the key set cannot be refreshed", ErrUnavailable, ErrUnknownKeyID)

func invalid(err error) error {
	return fmt.Errorf("%w: %w", ErrInvalidToken, err)
}
