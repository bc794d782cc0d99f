package authfallback

// The glue between the Verifier and what issue 18 added beside it: OIDC
// discovery (discovery.go), opaque tokens by introspection (introspect.go)
// and DPoP-bound tokens (dpop.go). The Verifier holds one idpState; the few
// lines that call into it from the older files are marked "idp".

import (
	"errors"
	"fmt"
	"strings"
)

// idpState is the part of a Verifier that discovery, introspection and
// DPoP use.
type idpState struct {
	// disc is nil unless Config.Discovery is set.
	disc *discovery
	// intro is nil unless Config.Introspection is set.
	intro *introspector
	// introOnly: intro is the issuer's only way to check a token (no
	// JWKSURLs, CacheFile or Discovery), so JWTs are introspected too.
	introOnly bool
	// dpop checks DPoP proofs; never nil after New.
	dpop *dpopChecker
}

// initIDP runs in New, after the Config was validated and copied and before
// anything else uses it.
func (v *Verifier) initIDP() {
	v.tagIssuer()
	v.idp.dpop = newDPoPChecker(&v.cfg.DPoP, v.cfg.Leeway)
	if v.cfg.Discovery {
		v.idp.disc = newDiscovery(v)
	}
	if v.cfg.Introspection != nil {
		v.idp.intro = newIntrospector(v)
		v.idp.introOnly = len(v.cfg.JWKSURLs) == 0 && v.cfg.CacheFile == "" && !v.cfg.Discovery
	}
}

// How Verify checks a token, when Config.Introspection is set.
const (
	checkLocally    = iota // a JWT, with keys (or an offline token)
	checkIntrospect        // by the introspection endpoint
	checkRefuse            // a JWT of another issuer, with introspection alone
)

// introspects says how raw is checked: an opaque token by introspection;
// a JWT locally, unless introspection is the issuer's only way to check
// one: then a JWT of this issuer is introspected, an offline token of its
// own checked with its offline keys, and any other JWT refused without
// being sent anywhere (a token never goes to another issuer's endpoint).
func (v *Verifier) introspects(raw string) int {
	if !looksLikeJWT(raw) {
		return checkIntrospect
	}
	if !v.idp.introOnly {
		return checkLocally
	}
	iss, ok := unverifiedIssuer(raw)
	switch {
	case !ok:
		return checkRefuse
	case iss == v.cfg.Issuer:
		return checkIntrospect
	case v.cfg.Offline != nil && iss == v.cfg.Offline.cfg.Issuer:
		return checkLocally
	}
	return checkRefuse
}

// closeIDP runs once in Close.
func (v *Verifier) closeIDP() {
	if in := v.idp.intro; in != nil {
		in.close()
	}
}

// statusIDP completes a Status.
func (v *Verifier) statusIDP(s *Status) {
	s.Issuer = v.cfg.Issuer
	if in := v.idp.intro; in != nil {
		st := in.status()
		s.Introspection = &st
	}
}

// tagIssuer makes every hook event of v say which issuer it is about.
func (v *Verifier) tagIssuer() {
	iss := v.cfg.Issuer
	if h := v.cfg.OnFallbackEnter; h != nil {
		v.cfg.OnFallbackEnter = func(ev FallbackEvent) { ev.Issuer = iss; h(ev) }
	}
	if h := v.cfg.OnFallbackExit; h != nil {
		v.cfg.OnFallbackExit = func(ev FallbackEvent) { ev.Issuer = iss; h(ev) }
	}
	if h := v.cfg.OnRefreshError; h != nil {
		v.cfg.OnRefreshError = func(ev RefreshErrorEvent) { ev.Issuer = iss; h(ev) }
	}
	if h := v.cfg.OnReconcile; h != nil {
		v.cfg.OnReconcile = func(ev ReconcileEvent) { ev.Issuer = iss; h(ev) }
	}
}

// validateIDP checks the Config fields of discovery, introspection and
// DPoP.
func (c *Config) validateIDP() error {
	if c.Discovery {
		if err := checkFetchURL(c.Issuer); err != nil {
			return fmt.Errorf("authfallback: Config.Discovery: the issuer must be a fetch URL: %w", err)
		}
	}
	if in := c.Introspection; in != nil {
		if err := in.validate(c.Discovery); err != nil {
			return err
		}
	}
	return c.DPoP.validate()
}

// looksLikeJWT reports whether raw has the shape of a JWS compact
// serialization (three non-empty dot-separated parts, the first one the
// base64url of a JSON object, "eyJ"), so that Verify sends it to the key
// set rather than to the introspection endpoint.
func looksLikeJWT(raw string) bool {
	first := strings.IndexByte(raw, '.')
	if first <= 0 || !strings.HasPrefix(raw, "eyJ") {
		return false
	}
	rest := raw[first+1:]
	second := strings.IndexByte(rest, '.')
	return second > 0 && second < len(rest)-1 && strings.IndexByte(rest[second+1:], '.') < 0
}

var errNotJWT = errors.New("token is not a JWT and no introspection endpoint is configured")
