package authfallback

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
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
	// ClaimPrimaryIssuer is the claim of an offline token that carries the
	// "iss" of the primary token. A Verifier accepts the offline token only
	// when it equals its own Config.Issuer, and the verified caller
	// (idempotency records, stale answers) is the primary issuer's
	// subject: a write sent with an offline token during an outage and
	// re-sent with a refreshed token afterwards is one write.
	ClaimPrimaryIssuer = "hf_piss"
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
	// Signer signs offline tokens: any crypto.Signer (a KMS or HSM key, or
	// an in-memory key) whose public key is Ed25519 (tokens are EdDSA) or
	// ECDSA P-256 (ES256). If nil, Key is used.
	Signer crypto.Signer
	// Key is an in-memory Ed25519 signing key, used when Signer is nil. If
	// both are nil and the issuer is not verify-only, a new Ed25519 key is
	// generated in memory (publish it with JWKSHandler). Use Rotate to
	// replace the signing key.
	Key ed25519.PrivateKey
	// KeyID is the "kid" of the signing key. If empty, the RFC 7638
	// thumbprint of the public key.
	KeyID string
	// PublicKeys, if set, makes the issuer verify-only: a Verifier trusts
	// offline tokens signed by these keys (by kid; Ed25519 or ECDSA P-256
	// public keys), and Issue fails (ErrVerifyOnly). Use it on replicas
	// that verify offline tokens minted elsewhere, without the private
	// key. Not with Signer, Key or JWKSURL.
	PublicKeys map[string]crypto.PublicKey
	// JWKSURL, if set, makes the issuer verify-only with the keys published
	// at this URL (the issuing replica's JWKSHandler; https, or plain http
	// to a loopback host), fetched by NewOfflineIssuer and then every
	// RefreshInterval, and at once (rate limited to one fetch per 10
	// seconds) when a token names an unknown kid: a Rotate on the issuing
	// side reaches every replica without a restart. The last good set is
	// kept: an unreachable URL or an empty or invalid set never replaces
	// it. Call Close to stop the refresh. Not with Signer, Key or
	// PublicKeys.
	JWKSURL string
	// RefreshInterval is the time between two fetches of JWKSURL. If zero,
	// 1 minute.
	RefreshInterval time.Duration
	// HTTPClient fetches JWKSURL (see Config.HTTPClient). If nil, a client
	// with http.DefaultTransport is used.
	HTTPClient *http.Client
	// ExchangeRate is how many offline tokens one subject (issuer and
	// subject of the primary token) may obtain per minute from this
	// OfflineIssuer, with a burst of as many; past it Issue fails with a
	// *RateLimitError (ErrRateLimited) and ExchangeHandler answers 429
	// with Retry-After. The limit is per process: with N issuing replicas
	// a subject may obtain up to N times as many. If zero, 10
	// ([DefaultExchangeRate]); if negative, no limit.
	ExchangeRate int
	// WriteProblem, if set, writes the problems of ExchangeHandler. If
	// nil, p is written as RFC 9457 application/problem+json.
	WriteProblem func(w http.ResponseWriter, r *http.Request, p Problem)
	// TTL is the lifetime of an offline token. If zero, 5 minutes. At most
	// 15 minutes ([MaxOfflineTTL]); a Verifier refuses offline tokens that
	// live longer. A verify-only issuer accepts no longer lifetime: give it
	// the TTL of the issuing side.
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

// offlineKey is one key of the ring.
type offlineKey struct {
	kid string
	alg string           // EdDSA or ES256
	pub crypto.PublicKey // ed25519.PublicKey or *ecdsa.PublicKey
	// signer signs with the current key (nil for previous keys and on a
	// verify-only issuer); priv is set when it is an in-memory Ed25519 key.
	signer crypto.Signer
	priv   ed25519.PrivateKey
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

// OfflineIssuer mints short-lived offline tokens signed through a
// crypto.Signer (an in-memory Ed25519 key by default). Use it when the IdP's token endpoint is down: callers whose primary
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
// subject revokes the offline token too; the header carries alg (EdDSA or
// ES256) and kid. Every issuance is an audit event; a subject obtains at
// most OfflineConfig.ExchangeRate tokens per minute.
//
// Keys rotate without a restart ([OfflineIssuer.Rotate]): the previous
// public key stays trusted for one TTL, so tokens in flight still verify;
// a Verifier that holds this OfflineIssuer sees a rotation at once, and
// other replicas through [OfflineIssuer.JWKSHandler] and a verify-only
// OfflineIssuer of their own (OfflineConfig.JWKSURL, or PublicKeys), which
// holds no private key.
// An OfflineIssuer is safe for concurrent use.
type OfflineIssuer struct {
	cfg     OfflineConfig
	ttl     time.Duration
	allowed map[string]struct{}
	audit   *slog.Logger

	rotateMu sync.Mutex
	ring     atomic.Pointer[offlineRing]

	limiter *exchangeLimiter // nil: no limit
	fetcher *offlineFetcher  // nil unless JWKSURL
}

// NewOfflineIssuer checks cfg and returns an OfflineIssuer. With
// cfg.JWKSURL it fetches the key set once (bounded by 10 seconds; a
// failure is not an error, the fetch is retried in the background) and
// keeps it fresh until Close.
func NewOfflineIssuer(cfg OfflineConfig) (*OfflineIssuer, error) {
	verifyOnly := cfg.PublicKeys != nil || cfg.JWKSURL != ""
	switch {
	case strings.TrimSpace(cfg.Issuer) == "":
		return nil, errors.New("authfallback: OfflineConfig.Issuer is required")
	case cfg.Key != nil && len(cfg.Key) != ed25519.PrivateKeySize:
		return nil, errors.New("authfallback: OfflineConfig.Key must be an Ed25519 private key")
	case verifyOnly && (cfg.Signer != nil || cfg.Key != nil):
		return nil, errors.New("authfallback: OfflineConfig: PublicKeys or JWKSURL (verify-only) cannot go with Signer or Key")
	case cfg.PublicKeys != nil && cfg.JWKSURL != "":
		return nil, errors.New("authfallback: OfflineConfig: PublicKeys and JWKSURL are exclusive")
	case cfg.TTL < 0 || cfg.TTL > MaxOfflineTTL:
		return nil, fmt.Errorf("authfallback: OfflineConfig.TTL must be at most %v", MaxOfflineTTL)
	case cfg.Leeway < 0 || cfg.Leeway > MaxLeeway:
		return nil, fmt.Errorf("authfallback: OfflineConfig.Leeway must be at most %v", MaxLeeway)
	case cfg.RefreshInterval < 0:
		return nil, errors.New("authfallback: OfflineConfig.RefreshInterval is negative")
	case len(cfg.AllowedScopes) == 0:
		return nil, errors.New("authfallback: OfflineConfig.AllowedScopes is required")
	}
	if cfg.JWKSURL != "" {
		if err := checkFetchURL(cfg.JWKSURL); err != nil {
			return nil, fmt.Errorf("authfallback: OfflineConfig.JWKSURL: %w", err)
		}
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
	switch rate := cfg.ExchangeRate; {
	case rate == 0:
		o.limiter = newExchangeLimiter(DefaultExchangeRate)
	case rate > 0:
		o.limiter = newExchangeLimiter(rate)
	}
	if verifyOnly {
		o.cfg.Key = nil
		ring := &offlineRing{byKID: map[string]*offlineKey{}}
		for kid, pub := range cfg.PublicKeys {
			k, err := o.publicKey(pub, kid)
			if err != nil {
				return nil, err
			}
			ring.byKID[k.kid] = k
		}
		if cfg.PublicKeys != nil && len(ring.byKID) == 0 {
			return nil, errors.New("authfallback: OfflineConfig.PublicKeys is empty")
		}
		o.ring.Store(ring)
		if cfg.JWKSURL != "" {
			o.startFetcher()
		}
		return o, nil
	}
	signer := cfg.Signer
	if signer == nil && cfg.Key != nil {
		signer = cfg.Key
	}
	if signer == nil {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		signer, o.cfg.Key = priv, priv
	}
	k, err := o.newKey(signer, cfg.KeyID)
	if err != nil {
		return nil, err
	}
	o.ring.Store(&offlineRing{cur: k, byKID: map[string]*offlineKey{k.kid: k}})
	return o, nil
}

// newKey returns the ring entry of a signing key.
func (o *OfflineIssuer) newKey(signer crypto.Signer, kid string) (*offlineKey, error) {
	if signer == nil {
		return nil, errors.New("authfallback: nil signer")
	}
	if priv, ok := signer.(ed25519.PrivateKey); ok && len(priv) != ed25519.PrivateKeySize {
		return nil, errors.New("authfallback: not an Ed25519 private key")
	}
	k, err := o.publicKey(signer.Public(), kid)
	if err != nil {
		return nil, err
	}
	k.signer = signer
	if priv, ok := signer.(ed25519.PrivateKey); ok {
		k.priv = slices.Clone(priv)
		k.signer = k.priv
	}
	return k, nil
}

// publicKey returns the ring entry of a public key (Ed25519 or ECDSA
// P-256).
func (o *OfflineIssuer) publicKey(pub crypto.PublicKey, kid string) (*offlineKey, error) {
	var alg, material string
	switch p := pub.(type) {
	case ed25519.PublicKey:
		if len(p) != ed25519.PublicKeySize {
			return nil, errors.New("authfallback: invalid Ed25519 public key")
		}
		alg, material = jwt.SigningMethodEdDSA.Alg(), base64.RawURLEncoding.EncodeToString(p)
		pub = slices.Clone(p)
	case *ecdsa.PublicKey:
		if p.Curve != elliptic.P256() || !ecOnCurve(p) {
			return nil, errors.New("authfallback: offline ECDSA keys must be P-256")
		}
		b, err := p.Bytes()
		if err != nil {
			return nil, err
		}
		alg, material = jwt.SigningMethodES256.Alg(), base64.RawURLEncoding.EncodeToString(b)
	default:
		return nil, fmt.Errorf("authfallback: offline key type %T not supported (Ed25519 or ECDSA P-256)", pub)
	}
	if kid == "" {
		kid = offlineThumbprint(pub)
	}
	if len(kid) > MaxKIDLength {
		return nil, errors.New("authfallback: offline key id too long")
	}
	vk := &verifyKey{
		kid: kid, alg: alg, pub: pub,
		fp:     "offline." + kid + "." + alg + "." + material,
		issuer: o.cfg.Issuer, reason: ReasonOfflineToken, offline: o,
	}
	return &offlineKey{kid: kid, alg: alg, pub: pub, vk: vk}, nil
}

// offlineThumbprint is the RFC 7638 JWK thumbprint of an Ed25519 or
// ECDSA P-256 key.
func offlineThumbprint(pub crypto.PublicKey) string {
	var doc string
	switch p := pub.(type) {
	case ed25519.PublicKey:
		doc = `{"crv":"Ed25519","kty":"OKP","x":"` + base64.RawURLEncoding.EncodeToString(p) + `"}`
	case *ecdsa.PublicKey:
		x, y := ecCoordinates(p)
		doc = `{"crv":"P-256","kty":"EC","x":"` + x + `","y":"` + y + `"}`
	}
	h := sha256.Sum256([]byte(doc))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// ecCoordinates returns the base64url x and y of a P-256 key, 32 bytes each.
func ecCoordinates(p *ecdsa.PublicKey) (x, y string) {
	b, _ := p.Bytes() // 0x04 || X || Y, checked by publicKey
	if len(b) != 65 {
		return "", ""
	}
	return base64.RawURLEncoding.EncodeToString(b[1:33]), base64.RawURLEncoding.EncodeToString(b[33:])
}

// Rotate makes key (with key id kid; if empty, its thumbprint) the signing
// key: an ed25519.PrivateKey or any crypto.Signer of an Ed25519 or ECDSA
// P-256 key. The previous keys stay trusted for one TTL plus Leeway, so
// tokens already issued keep verifying until they expire; verifying
// replicas that fetch JWKSHandler see the new key within their
// RefreshInterval (at once when a token names it). Rotating to a kid
// that is in use with another key fails, and so does Rotate on a
// verify-only issuer.
func (o *OfflineIssuer) Rotate(key crypto.Signer, kid string) error {
	if o.verifyOnly() {
		return ErrVerifyOnly
	}
	k, err := o.newKey(key, kid)
	if err != nil {
		return err
	}
	o.rotateMu.Lock()
	defer o.rotateMu.Unlock()
	now := time.Now()
	old := o.ring.Load()
	if prev, ok := old.byKID[k.kid]; ok && prev.vk.fp != k.vk.fp {
		return fmt.Errorf("authfallback: offline key id %q is in use with another key", k.kid)
	}
	n := &offlineRing{cur: k, byKID: map[string]*offlineKey{k.kid: k}}
	for kid, pk := range old.byKID {
		if kid == k.kid {
			continue
		}
		if pk.retireAt.IsZero() { // the current key until now
			pk = &offlineKey{kid: pk.kid, alg: pk.alg, pub: pk.pub, retireAt: now.Add(o.ttl + o.cfg.Leeway), vk: pk.vk}
		}
		if now.Before(pk.retireAt) {
			n.byKID[kid] = pk
		}
	}
	o.ring.Store(n)
	return nil
}

// PublicKeys returns the public keys trusted now, by kid: the current key
// and previous keys not yet retired (ed25519.PublicKey or
// *ecdsa.PublicKey).
func (o *OfflineIssuer) PublicKeys() map[string]crypto.PublicKey {
	now := time.Now()
	m := map[string]crypto.PublicKey{}
	for kid, k := range o.ring.Load().byKID {
		if k.retireAt.IsZero() || now.Before(k.retireAt) {
			m[kid] = k.pub
		}
	}
	return m
}

// JWKS returns the public keys trusted now as a JSON Web Key Set
// (RFC 7517; kty OKP crv Ed25519 alg EdDSA, or kty EC crv P-256 alg ES256;
// use sig), sorted by kid.
func (o *OfflineIssuer) JWKS() []byte {
	type jwk struct {
		Kty string `json:"kty"`
		Crv string `json:"crv"`
		X   string `json:"x"`
		Y   string `json:"y,omitempty"`
		Kid string `json:"kid"`
		Alg string `json:"alg"`
		Use string `json:"use"`
	}
	keys := o.PublicKeys()
	doc := struct {
		Keys []jwk `json:"keys"`
	}{Keys: []jwk{}}
	for _, kid := range slices.Sorted(maps.Keys(keys)) {
		switch p := keys[kid].(type) {
		case ed25519.PublicKey:
			doc.Keys = append(doc.Keys, jwk{Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(p), Kid: kid, Alg: "EdDSA", Use: "sig"})
		case *ecdsa.PublicKey:
			x, y := ecCoordinates(p)
			doc.Keys = append(doc.Keys, jwk{Kty: "EC", Crv: "P-256", X: x, Y: y, Kid: kid, Alg: "ES256", Use: "sig"})
		}
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
// was accepted degraded for any other reason (ReasonExpiredGrace: the
// grace window never buys a fresh token), when no audience or no scope is
// left, and with a *RateLimitError past OfflineConfig.ExchangeRate. It
// fails with ErrVerifyOnly on a verify-only issuer. The issuance is
// written to the audit log.
func (o *OfflineIssuer) Issue(ctx context.Context, primary *Result, requested []string) (*OfflineToken, error) {
	if o.verifyOnly() {
		return nil, ErrVerifyOnly
	}
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
	if o.limiter != nil {
		if wait, ok := o.limiter.take(primary.Issuer+"\x00"+primary.Subject, now); !ok {
			err := &RateLimitError{RetryAfter: wait}
			o.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: offline token refused: exchange rate exceeded",
				slog.String("subject", primary.Subject), slog.String("primary_token_hash", primary.TokenHash),
				slog.Duration("retry_after", wait))
			return nil, err
		}
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
	claims[ClaimPrimaryIssuer] = primary.Issuer
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
	raw, err := k.sign(claims)
	if err != nil {
		return nil, fmt.Errorf("authfallback: signing the offline token: %w", err)
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
// in its expired grace window (already expired) is refused, as is any
// other or unknown degraded reason: the exchange must never turn a grace
// or weakened acceptance into a fresh bearer token.
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
