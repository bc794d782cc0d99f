package authfallback

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unsafe"

	"github.com/holdfast-go/holdfast/internal/httpx"
)

// Issuers verifies tokens of several issuers behind one Handler, e.g. a
// second identity provider from another vendor. Each issuer has a
// [Verifier] of its own, built from its Config: its own JWKS URLs and
// alternates (or discovery), last-known-good keys, Policy, Audience,
// fallback mode and Status. The unverified "iss" of a JWT picks the
// Verifier before any key is looked up, and that Verifier accepts only
// its own issuer, so one issuer's keys never verify another's tokens; an
// outage of one issuer degrades only its own tokens. An opaque token (not
// shaped like a JWT) goes to the one issuer with Config.Introspection, and
// to no other: a token is never sent to the introspection endpoint of an
// issuer that did not issue it.
//
// Issuers is safe for concurrent use. Close stops every Verifier.
type Issuers struct {
	list  []*Verifier
	byIss map[string]*Verifier
	intro *Verifier
}

// errUnknownIssuer: the token names an issuer that is not configured.
var errUnknownIssuer = errors.New(`"iss" is not a configured issuer`)

// NewIssuers returns an Issuers with one Verifier per Config (see [New]).
// It fails when a Config is invalid, when two name the same Issuer (or
// offline issuer), or when more than one has Introspection. Refused
// requests are answered by the ErrorHandler and Realm
// settings of the issuer's Config, or of the first Config when no issuer
// could be picked.
func NewIssuers(cfgs ...Config) (*Issuers, error) {
	if len(cfgs) == 0 {
		return nil, errors.New("authfallback: NewIssuers needs at least one Config")
	}
	is := &Issuers{byIss: make(map[string]*Verifier, len(cfgs))}
	claim := func(iss string, v *Verifier) error {
		if _, dup := is.byIss[iss]; dup {
			return fmt.Errorf("authfallback: NewIssuers: issuer %q configured twice", iss)
		}
		is.byIss[iss] = v
		return nil
	}
	for _, cfg := range cfgs {
		if cfg.Introspection != nil && is.intro != nil {
			_ = is.Close()
			return nil, errors.New("authfallback: NewIssuers: at most one issuer may have Introspection")
		}
		v, err := New(cfg)
		if err != nil {
			_ = is.Close()
			return nil, err
		}
		is.list = append(is.list, v)
		err = claim(cfg.Issuer, v)
		if err == nil && cfg.Offline != nil {
			err = claim(cfg.Offline.cfg.Issuer, v)
		}
		if err != nil {
			_ = is.Close()
			return nil, err
		}
		if cfg.Introspection != nil {
			is.intro = v
		}
	}
	return is, nil
}

// Close stops every Verifier. It always returns nil.
func (is *Issuers) Close() error {
	for _, v := range is.list {
		_ = v.Close()
	}
	return nil
}

// Verifier returns the Verifier of issuer, nil if it is not configured.
func (is *Issuers) Verifier(issuer string) *Verifier {
	v := is.byIss[issuer]
	if v == nil || v.cfg.Issuer != issuer {
		return nil
	}
	return v
}

// Status returns the Status of every issuer, in the order of the Configs;
// Status.Issuer says which.
func (is *Issuers) Status() []Status {
	out := make([]Status, len(is.list))
	for i, v := range is.list {
		out[i] = v.Status()
	}
	return out
}

// Verify verifies raw with the Verifier of its issuer (see
// [Verifier.Verify]). A JWT whose "iss" is not configured is refused
// (ErrInvalidToken).
func (is *Issuers) Verify(ctx context.Context, raw string) (*Result, error) {
	v, err := is.route(raw)
	if err != nil {
		return nil, err
	}
	return v.Verify(ctx, raw)
}

// route picks the Verifier of raw: the one whose verified-token cache
// already holds it (a cheap hit for a repeated token), else by the
// unverified "iss"; an opaque token goes to the introspecting issuer.
func (is *Issuers) route(raw string) (*Verifier, error) {
	if raw == "" {
		return nil, ErrNoToken
	}
	if !looksLikeJWT(raw) {
		if is.intro == nil {
			return nil, invalid(errNotJWT)
		}
		return is.intro, nil
	}
	if len(is.list) == 1 {
		return is.list[0], nil
	}
	if len(raw) <= DefaultMaxTokenSize {
		h := sha256.Sum256(unsafe.Slice(unsafe.StringData(raw), len(raw)))
		for _, v := range is.list {
			if v.cache.get(h) != nil {
				return v, nil
			}
		}
	}
	iss, ok := unverifiedIssuer(raw)
	if !ok {
		return nil, invalid(errIssuer)
	}
	v := is.byIss[iss]
	if v == nil {
		return nil, invalid(errUnknownIssuer)
	}
	return v, nil
}

// unverifiedIssuer reads the "iss" claim of a JWT without verifying it:
// only to pick the Verifier, which verifies everything itself.
func unverifiedIssuer(raw string) (string, bool) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 || len(parts[1]) > 2*DefaultMaxTokenSize {
		return "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", false
	}
	var c struct {
		Iss string `json:"iss"`
	}
	if json.Unmarshal(b, &c) != nil || c.Iss == "" {
		return "", false
	}
	return c.Iss, true
}

// VerifyRequest verifies the access token of r (Authorization: Bearer or
// DPoP) with the Verifier of its issuer, DPoP proof included, as Handler
// does.
func (is *Issuers) VerifyRequest(r *http.Request) (*Result, error) {
	raw, dpop, ok := requestToken(r)
	if !ok {
		return nil, ErrNoToken
	}
	v, err := is.route(raw)
	if err != nil {
		return is.list[0].checkDPoP(r, raw, dpop, nil, err)
	}
	res, err := v.Verify(r.Context(), raw)
	return v.checkDPoP(r, raw, dpop, res, err)
}

// Handler returns middleware that authenticates every request as
// [Verifier.Handler] does, with the Verifier of the token's issuer: the
// Result (and the verified caller, internal/caller) in the context, the
// Holdfast-Degraded header, DPoP proofs checked for bound tokens.
func (is *Issuers) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		first := is.list[0]
		raw, dpop, ok := requestToken(r)
		if !ok {
			first.fail(w, r, ErrNoToken)
			return
		}
		v, err := is.route(raw)
		if err != nil {
			_, err = first.checkDPoP(r, raw, dpop, nil, err)
			first.fail(w, r, err)
			return
		}
		res, err := v.Verify(r.Context(), raw)
		res, err = v.checkDPoP(r, raw, dpop, res, err)
		if err != nil {
			v.fail(w, r, err)
			return
		}
		if res.Degraded && !v.cfg.DisableDegradedHeader {
			w.Header().Set(httpx.HeaderDegraded, res.Reason)
		}
		next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), res)))
	})
}
