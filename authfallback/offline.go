package authfallback

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Offline token limits and names.
const (
	// MaxOfflineTTL is the longest lifetime of an offline token.
	MaxOfflineTTL = 15 * time.Minute
	// DefaultOfflineTTL is the lifetime of an offline token when
	// OfflineConfig.TTL is zero.
	DefaultOfflineTTL = 5 * time.Minute
	// ReasonOfflineToken is the Result.Reason of a request authenticated
	// with an offline token.
	ReasonOfflineToken = "offline-token"
	// ClaimPrimaryID is the claim of an offline token that carries the
	// "jti" of the primary token it was exchanged for (absent if the
	// primary had none). A Verifier refuses the offline token when that
	// jti is revoked.
	ClaimPrimaryID = "hf_pjti"
	// ClaimPrimaryIssuedAt is the claim of an offline token that carries
	// the "iat" of the primary token (NumericDate; absent if the primary
	// had none). A Verifier checks subject revocations and
	// Policy.MaxTokenAge against it, so an exchange never launders an old
	// or revoked primary into a fresh token.
	ClaimPrimaryIssuedAt = "hf_piat"
)

// ErrOfflineRefused is the error of [OfflineIssuer.Issue] when it refuses
// to mint a token: no verified caller, a caller that itself presented an
// offline token (no chaining: an offline token never extends itself), a
// caller accepted in its expired grace window or degraded for another
// reason than fallback mode or stale keys, or no scope left after
// narrowing.
var ErrOfflineRefused = errors.New("authfallback: offline token refused")

var (
	errOfflineNoCaller = fmt.Errorf("%w: no verified caller", ErrOfflineRefused)
	errOfflineChained  = fmt.Errorf("%w: the caller presented an offline token", ErrOfflineRefused)
	errOfflineExpiry   = fmt.Errorf("%w: the caller's token has no expiry or has expired", ErrOfflineRefused)
	errOfflineAudience = fmt.Errorf("%w: the caller's token is not for any audience of offline tokens", ErrOfflineRefused)
	errOfflineDegraded = fmt.Errorf("%w: the caller's token was accepted degraded for a reason that does not allow an exchange", ErrOfflineRefused)
	errOfflineNoScope  = fmt.Errorf("%w: no allowed scope requested", ErrOfflineRefused)
)

// OfflineConfig configures an [OfflineIssuer]. NewOfflineIssuer copies it.
type OfflineConfig struct {
	// Issuer is the "iss" of offline tokens. Required; it must differ from
	// the IdP's issuer, so an offline token is never mistaken for an IdP
	// token.
	Issuer string
	// Audience is the "aud" of offline tokens. A Verifier that trusts this
	// issuer (Config.Offline) requires one of its values to be in
	// Config.Audience, so set it to the services that accept the tokens.
	Audience []string
	// Key signs offline tokens (EdDSA). Required. Use Rotate to replace it.
	Key ed25519.PrivateKey
	// KeyID is the "kid" of Key. If empty, the RFC 7638 thumbprint of the
	// public key.
	KeyID string
	// TTL is the lifetime of an offline token. If zero, 5 minutes. At most
	// 15 minutes ([MaxOfflineTTL]); a Verifier refuses offline tokens that
	// live longer.
	TTL time.Duration
	// AllowedScopes are the only scopes an offline token may carry.
	// Required. Minted tokens carry the intersection of the requested
	// scopes, the caller's and these; a Verifier refuses any other scope.
	// They must be within the Verifier's Policy.AllowedScopes.
	AllowedScopes []string
	// Leeway is added to the TTL for which a previous key stays trusted
	// after Rotate (the Verifier's own Config.Leeway applies to exp and
	// iat). If zero, none. At most 60 seconds.
	Leeway time.Duration
	// AuditLog receives one event per issued token (subject, jti, scopes,
	// TTL, token hash; never the token). If nil, slog.Default() is used.
	AuditLog *slog.Logger
	// OnIssue is called after each issued token. It may be nil, may be
	// called concurrently, is called without any lock held, and must not
	// block.
	OnIssue func(OfflineIssueEvent)
}

// OfflineIssueEvent describes an issued offline token.
type OfflineIssueEvent struct {
	// Subject, ID ("jti"), Scopes and ExpiresAt are the offline token's.
	Subject   string
	ID        string
	Scopes    []string
	ExpiresAt time.Time
	// KeyID is the "kid" of the issuer key that signed it.
	KeyID string
	// TokenHash is the hex SHA-256 of the issued token.
	TokenHash string
	// PrimaryTokenHash is the TokenHash of the token the caller presented.
	PrimaryTokenHash string
	// PrimaryDegraded is true when the caller's token was itself accepted
	// in fallback mode.
	PrimaryDegraded bool
}

// OfflineToken is a minted offline token.
type OfflineToken struct {
	// Token is the compact JWS. Never log it.
	Token string
	// ID ("jti"), Scopes and ExpiresAt are the token's claims.
	ID        string
	Scopes    []string
	ExpiresAt time.Time
}

// offlineKey is one Ed25519 key of the ring.
type offlineKey struct {
	kid  string
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey // only for the current key
	// retireAt: zero for the current key; a previous key is trusted until
	// then (one TTL plus leeway after the rotation).
	retireAt time.Time
	// vk is the key as a Verifier uses it; the same pointer across
	// rotations, so verified-token cache entries stay valid.
	vk *verifyKey
}

// offlineRing is an immutable key ring, swapped atomically.
type offlineRing struct {
	cur   *offlineKey
	byKID map[string]*offlineKey
}

// OfflineIssuer mints short-lived offline tokens signed with a local Ed25519
// key. Use it when the IdP's token endpoint is down: callers whose primary
// token still verifies exchange it for an offline token
// ([OfflineIssuer.ExchangeHandler]), which a [Verifier] configured with
// Config.Offline accepts as degraded with reason "offline-token", while its
// Policy allows (by default only in fallback mode). The Verifier is the
// only place offline tokens are verified, so they pass the same checks,
// the same policy and the same revocation list as any other token.
//
// Offline tokens carry iss (OfflineConfig.Issuer), sub (the caller's),
// aud (OfflineConfig.Audience ∩ the caller's aud, if configured), iat, exp
// (at most TTL later and never after the caller's own exp), a random jti,
// scope, and the caller's jti and iat ([ClaimPrimaryID],
// [ClaimPrimaryIssuedAt]) so that revoking the primary token or its
// subject revokes the offline token too; the header carries alg EdDSA and
// kid. Every issuance is an audit event.
//
// Keys rotate without a restart ([OfflineIssuer.Rotate]): the previous
// public key stays trusted for one TTL, so tokens in flight still verify;
// a Verifier sees a rotation at once.
// An OfflineIssuer is safe for concurrent use.
type OfflineIssuer struct {
	cfg     OfflineConfig
	ttl     time.Duration
	allowed map[string]struct{}
	audit   *slog.Logger

	rotateMu sync.Mutex
	ring     atomic.Pointer[offlineRing]
}

// NewOfflineIssuer checks cfg and returns an OfflineIssuer.
func NewOfflineIssuer(cfg OfflineConfig) (*OfflineIssuer, error) {
	switch {
	case strings.TrimSpace(cfg.Issuer) == "":
		return nil, errors.New("authfallback: OfflineConfig.Issuer is required")
	case len(cfg.Key) != ed25519.PrivateKeySize:
		return nil, errors.New("authfallback: OfflineConfig.Key must be an Ed25519 private key")
	case cfg.TTL < 0 || cfg.TTL > MaxOfflineTTL:
		return nil, fmt.Errorf("authfallback: OfflineConfig.TTL must be at most %v", MaxOfflineTTL)
	case cfg.Leeway < 0 || cfg.Leeway > MaxLeeway:
		return nil, fmt.Errorf("authfallback: OfflineConfig.Leeway must be at most %v", MaxLeeway)
	case len(cfg.AllowedScopes) == 0:
		return nil, errors.New("authfallback: OfflineConfig.AllowedScopes is required")
	}
	o := &OfflineIssuer{cfg: cfg, ttl: cfg.TTL, audit: cfg.AuditLog, allowed: map[string]struct{}{}}
	if o.ttl == 0 {
		o.ttl = DefaultOfflineTTL
	}
	if o.audit == nil {
		o.audit = slog.Default()
	}
	o.cfg.Audience = slices.Clone(cfg.Audience)
	for _, a := range cfg.Audience {
		if strings.TrimSpace(a) == "" {
			return nil, fmt.Errorf("authfallback: OfflineConfig.Audience: invalid entry %q", a)
		}
	}
	o.cfg.AllowedScopes = slices.Clone(cfg.AllowedScopes)
	for _, s := range cfg.AllowedScopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n") {
			return nil, fmt.Errorf("authfallback: OfflineConfig.AllowedScopes: invalid scope %q", s)
		}
		o.allowed[s] = struct{}{}
	}
	k, err := o.newKey(cfg.Key, cfg.KeyID)
	if err != nil {
		return nil, err
	}
	o.ring.Store(&offlineRing{cur: k, byKID: map[string]*offlineKey{k.kid: k}})
	return o, nil
}

func (o *OfflineIssuer) newKey(priv ed25519.PrivateKey, kid string) (*offlineKey, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, errors.New("authfallback: not an Ed25519 private key")
	}
	pub := priv.Public().(ed25519.PublicKey)
	if kid == "" {
		kid = offlineThumbprint(pub)
	}
	if len(kid) > MaxKIDLength {
		return nil, errors.New("authfallback: offline key id too long")
	}
	vk := &verifyKey{
		kid: kid, alg: jwt.SigningMethodEdDSA.Alg(), pub: pub,
		fp:     "offline." + kid + "." + base64.RawURLEncoding.EncodeToString(pub),
		issuer: o.cfg.Issuer, reason: ReasonOfflineToken, offline: o,
	}
	return &offlineKey{kid: kid, pub: pub, priv: slices.Clone(priv), vk: vk}, nil
}

// offlineThumbprint is the RFC 7638 JWK thumbprint of an Ed25519 key.
func offlineThumbprint(pub ed25519.PublicKey) string {
	x := base64.RawURLEncoding.EncodeToString(pub)
	h := sha256.Sum256([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + x + `"}`))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// Rotate makes key (with key id kid; if empty, its thumbprint) the signing
// key. The previous keys stay trusted for one TTL plus Leeway, so
// tokens already issued keep verifying until they expire. Rotating to a kid
// that is in use with another key fails.
func (o *OfflineIssuer) Rotate(key ed25519.PrivateKey, kid string) error {
	k, err := o.newKey(key, kid)
	if err != nil {
		return err
	}
	o.rotateMu.Lock()
	defer o.rotateMu.Unlock()
	now := time.Now()
	old := o.ring.Load()
	if prev, ok := old.byKID[k.kid]; ok && !prev.pub.Equal(k.pub) {
		return fmt.Errorf("authfallback: offline key id %q is in use with another key", k.kid)
	}
	n := &offlineRing{cur: k, byKID: map[string]*offlineKey{k.kid: k}}
	for kid, pk := range old.byKID {
		if kid == k.kid {
			continue
		}
		if pk.retireAt.IsZero() { // the current key until now
			pk = &offlineKey{kid: pk.kid, pub: pk.pub, retireAt: now.Add(o.ttl + o.cfg.Leeway), vk: pk.vk}
		}
		if now.Before(pk.retireAt) {
			n.byKID[kid] = pk
		}
	}
	o.ring.Store(n)
	return nil
}

// PublicKeys returns the public keys trusted now, by kid: the
// current key and previous keys not yet retired.
func (o *OfflineIssuer) PublicKeys() map[string]ed25519.PublicKey {
	now := time.Now()
	m := map[string]ed25519.PublicKey{}
	for kid, k := range o.ring.Load().byKID {
		if k.retireAt.IsZero() || now.Before(k.retireAt) {
			m[kid] = slices.Clone(k.pub)
		}
	}
	return m
}

// JWKS returns the public keys trusted now as a JSON Web Key Set
// (RFC 7517; kty OKP, crv Ed25519, alg EdDSA, use sig), sorted by kid.
func (o *OfflineIssuer) JWKS() []byte {
	type jwk struct {
		Kty string `json:"kty"`
		Crv string `json:"crv"`
		X   string `json:"x"`
		Kid string `json:"kid"`
		Alg string `json:"alg"`
		Use string `json:"use"`
	}
	keys := o.PublicKeys()
	doc := struct {
		Keys []jwk `json:"keys"`
	}{Keys: []jwk{}}
	for _, kid := range slices.Sorted(maps.Keys(keys)) {
		doc.Keys = append(doc.Keys, jwk{"OKP", "Ed25519", base64.RawURLEncoding.EncodeToString(keys[kid]), kid, "EdDSA", "sig"})
	}
	b, _ := json.Marshal(doc) // cannot fail: strings only
	return b
}

// Issue mints an offline token for primary, the verified Result of the
// caller's own token (verified normally, or degraded by fallback mode or
// stale keys). Its scopes are requested ∩ primary.Scopes ∩ AllowedScopes;
// if requested is nil, primary.Scopes ∩ AllowedScopes. Its exp is never
// after primary.ExpiresAt, its aud is OfflineConfig.Audience ∩ the aud of
// primary.Claims, and it carries primary's jti and iat
// ([ClaimPrimaryID], [ClaimPrimaryIssuedAt]). It fails with an error
// matching ErrOfflineRefused when primary is nil, has no subject, no exp
// or has expired, when primary is itself an offline token, when primary
// was accepted degraded for any other reason (ReasonExpiredGrace: a
// once-only grace use never buys a fresh token), when no audience or no
// scope is left. The issuance is written to the audit log.
func (o *OfflineIssuer) Issue(ctx context.Context, primary *Result, requested []string) (*OfflineToken, error) {
	if primary == nil || primary.Subject == "" {
		return nil, o.refuse(ctx, primary, errOfflineNoCaller)
	}
	if primary.Reason == ReasonOfflineToken || primary.Issuer == o.cfg.Issuer {
		return nil, o.refuse(ctx, primary, errOfflineChained)
	}
	if !exchangeable(primary) {
		return nil, o.refuse(ctx, primary, errOfflineDegraded)
	}
	now := time.Now()
	// The offline token never outlives its primary: exp = min(now+TTL,
	// primary exp), on the wire with second precision (rounded down).
	exp := now.Add(o.ttl)
	if primary.ExpiresAt.Before(exp) {
		exp = primary.ExpiresAt
	}
	exp = time.Unix(exp.Unix(), 0)
	if primary.ExpiresAt.IsZero() || !exp.After(now) {
		return nil, o.refuse(ctx, primary, errOfflineExpiry)
	}
	var aud []string
	if len(o.cfg.Audience) > 0 {
		paud, _ := primary.Claims.GetAudience()
		for _, a := range o.cfg.Audience {
			if slices.Contains(paud, a) && !slices.Contains(aud, a) {
				aud = append(aud, a)
			}
		}
		if len(aud) == 0 {
			return nil, o.refuse(ctx, primary, errOfflineAudience)
		}
	}
	var scopes []string
	for _, s := range primary.Scopes {
		if _, ok := o.allowed[s]; !ok || slices.Contains(scopes, s) {
			continue
		}
		if requested != nil && !slices.Contains(requested, s) {
			continue
		}
		scopes = append(scopes, s)
	}
	if len(scopes) == 0 {
		return nil, o.refuse(ctx, primary, errOfflineNoScope)
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	jti := base64.RawURLEncoding.EncodeToString(id[:])
	claims := jwt.MapClaims{
		"iss":   o.cfg.Issuer,
		"sub":   primary.Subject,
		"iat":   now.Unix(),
		"exp":   exp.Unix(),
		"jti":   jti,
		"scope": strings.Join(scopes, " "),
	}
	if primary.ID != "" {
		claims[ClaimPrimaryID] = primary.ID
	}
	if !primary.IssuedAt.IsZero() {
		claims[ClaimPrimaryIssuedAt] = primary.IssuedAt.Unix()
	}
	carryBinding(claims, primary) // idp: a bound token stays bound (dpop.go)
	switch len(aud) {
	case 0:
	case 1:
		claims["aud"] = aud[0]
	default:
		claims["aud"] = aud
	}
	k := o.ring.Load().cur
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	t.Header["kid"] = k.kid
	raw, err := t.SignedString(k.priv)
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256([]byte(raw))
	ev := OfflineIssueEvent{
		Subject: primary.Subject, ID: jti, Scopes: scopes, ExpiresAt: exp, KeyID: k.kid,
		TokenHash: hex.EncodeToString(h[:]), PrimaryTokenHash: primary.TokenHash, PrimaryDegraded: primary.Degraded,
	}
	o.audit.LogAttrs(ctx, slog.LevelInfo, "authfallback: offline token issued",
		slog.String("subject", ev.Subject),
		slog.String("jti", ev.ID),
		slog.String("scope", strings.Join(scopes, " ")),
		slog.Duration("ttl", exp.Sub(now).Round(time.Second)),
		slog.String("primary_jti", primary.ID),
		slog.Time("expires_at", exp),
		slog.String("kid", ev.KeyID),
		slog.String("token_hash", ev.TokenHash),
		slog.String("primary_token_hash", ev.PrimaryTokenHash),
		slog.Bool("primary_degraded", ev.PrimaryDegraded),
		slog.String("primary_reason", primary.Reason),
	)
	if h := o.cfg.OnIssue; h != nil {
		h(ev)
	}
	return &OfflineToken{Token: raw, ID: jti, Scopes: scopes, ExpiresAt: exp}, nil
}

// exchangeable reports whether primary may be exchanged for an offline
// token: a token verified normally, or one degraded only because the key
// set could not be confirmed (fallback mode or stale keys). A token taken
// in its expired grace window (single use, already expired) is refused, as
// is any other or unknown degraded reason: the exchange must never turn a
// once-only or weakened acceptance into a fresh bearer token.
func exchangeable(primary *Result) bool {
	if !primary.Degraded {
		return primary.Reason == ""
	}
	switch primary.Reason {
	case ReasonJWKSUnreachable, ReasonJWKSInvalid, ReasonJWKSStale:
		return true
	}
	return false
}

// trustedKey returns the key kid as a Verifier uses it, if it is trusted
// at now: the current key, or a previous one not yet retired. Lock-free,
// no allocation.
func (o *OfflineIssuer) trustedKey(kid string, now time.Time) *verifyKey {
	k := o.ring.Load().byKID[kid]
	if k == nil || (!k.retireAt.IsZero() && !now.Before(k.retireAt)) {
		return nil
	}
	return k.vk
}

// checkOfflineClaims applies the offline token rules to claims whose
// signature, issuer, audience, exp and iat the Verifier has checked: iat
// and exp present, lifetime (exp - iat) at most TTL, sub and jti present,
// at least one scope, every scope in AllowedScopes. Errors match
// ErrInvalidToken.
func (o *OfflineIssuer) checkOfflineClaims(claims jwt.MapClaims) error {
	exp, err1 := claims.GetExpirationTime()
	iat, err2 := claims.GetIssuedAt()
	if err1 != nil || err2 != nil || exp == nil || iat == nil {
		return offlineInvalid(errors.New(`missing "exp" or "iat"`))
	}
	if life := exp.Sub(iat.Time); life > o.ttl {
		return offlineInvalid(fmt.Errorf("lifetime %v longer than the offline TTL %v", life, o.ttl))
	}
	sub, _ := claims["sub"].(string)
	jti, _ := claims["jti"].(string)
	if sub == "" || jti == "" {
		return offlineInvalid(errors.New(`missing "sub" or "jti"`))
	}
	scope, _ := claims["scope"].(string)
	scopes := strings.Fields(scope)
	if len(scopes) == 0 {
		return offlineInvalid(errors.New("no scope"))
	}
	for _, s := range scopes {
		if _, ok := o.allowed[s]; !ok {
			return offlineInvalid(fmt.Errorf("scope %q outside AllowedScopes", s))
		}
	}
	_, piat, err := offlinePrimaryClaims(claims)
	if err != nil {
		return offlineInvalid(err)
	}
	if piat.After(iat.Time) {
		return offlineInvalid(errors.New("primary iat after the offline token's iat"))
	}
	return nil
}

// offlinePrimaryClaims reads ClaimPrimaryID and ClaimPrimaryIssuedAt.
func offlinePrimaryClaims(claims jwt.MapClaims) (jti string, iat time.Time, err error) {
	if x, ok := claims[ClaimPrimaryID]; ok {
		s, isStr := x.(string)
		if !isStr || s == "" {
			return "", time.Time{}, fmt.Errorf("%s is not a non-empty string", ClaimPrimaryID)
		}
		jti = s
	}
	if x, ok := claims[ClaimPrimaryIssuedAt]; ok {
		var f float64
		switch n := x.(type) {
		case float64:
			f = n
		case json.Number:
			f, err = n.Float64()
		default:
			err = errors.New("not a number")
		}
		if err != nil || f <= 0 || f > 1e11 {
			return "", time.Time{}, fmt.Errorf("%s is not a NumericDate", ClaimPrimaryIssuedAt)
		}
		iat = time.Unix(int64(f), 0)
	}
	return jti, iat, nil
}

// refuse writes a refused issuance to the audit log and returns err.
func (o *OfflineIssuer) refuse(ctx context.Context, primary *Result, err error) error {
	var sub, hash string
	if primary != nil {
		sub, hash = primary.Subject, primary.TokenHash
	}
	o.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: offline token refused",
		slog.String("subject", sub),
		slog.String("primary_token_hash", hash),
		slog.String("err", err.Error()),
	)
	return err
}

func offlineInvalid(err error) error {
	return fmt.Errorf("%w: offline token: %w", ErrInvalidToken, err)
}
