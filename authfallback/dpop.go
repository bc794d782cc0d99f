package authfallback

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/holdfast-go/holdfast/internal/problem"
)

// DPoP (RFC 9449). A token bound to a key, with a "cnf" claim holding
// "jkt" (the RFC 7638 thumbprint of the client's public key), whether a JWT
// or an introspected opaque token, is accepted by Handler only under the
// DPoP authorization scheme ("Authorization: DPoP <token>") and with
// exactly one valid "DPoP" proof header for this request (RFC 9449 §4.3,
// §7.1). A bound token sent as Bearer is refused, and so is an unbound
// token sent as DPoP. The binding is checked on every request, the cached
// and degraded ones included: a stolen bound token stays useless while the
// IdP is down. Verify alone, which sees no request, does not check proofs:
// use Handler, or [Verifier.VerifyRequest].

// Defaults and limits of [DPoPConfig].
const (
	DefaultDPoPMaxAge       = time.Minute
	DefaultDPoPClockSkew    = 5 * time.Second
	DefaultMaxDPoPProofs    = 100000
	MaxDPoPProofSize        = 8 << 10
	ProblemInvalidDPoPProof = "invalid-dpop-proof"
)

// Errors of DPoP. Match them with errors.Is.
var (
	// ErrInvalidDPoPProof: the DPoP proof is missing, malformed, not for
	// this request, too old, replayed, or signed by a key other than the
	// one the token is bound to. It matches ErrInvalidToken; Handler
	// answers 401 with WWW-Authenticate: DPoP error="invalid_dpop_proof".
	ErrInvalidDPoPProof = fmt.Errorf("%w: invalid DPoP proof", ErrInvalidToken)
	// ErrDPoPBinding: a bound token sent as a Bearer token, an unbound
	// token sent under the DPoP scheme, or a confirmation ("cnf") other
	// than "jkt". It matches ErrInvalidToken; Handler answers 401 with
	// WWW-Authenticate: DPoP error="invalid_token".
	ErrDPoPBinding = fmt.Errorf("%w: token binding (DPoP)", ErrInvalidToken)
	// ErrDPoPReplayStore: the replay cache failed, so a proof cannot be
	// checked for replay. It matches ErrUnavailable (503).
	ErrDPoPReplayStore = fmt.Errorf("%w: DPoP replay cache", ErrUnavailable)
)

// DPoPConfig configures the checking of DPoP proofs; see Config.DPoP. Its
// zero value is the default.
type DPoPConfig struct {
	// Algorithms are the signature algorithms a proof may use (asymmetric
	// only). If empty, ES256, EdDSA, RS256 and PS256.
	Algorithms []string
	// MaxAge is how old a proof's "iat" may be. If zero, 1 minute.
	MaxAge time.Duration
	// ClockSkew is how far in the future a proof's "iat" may be. If zero,
	// 5 seconds.
	ClockSkew time.Duration
	// ReplayCache remembers the proofs seen, so none is accepted twice. If
	// nil, an in-memory cache of at most MaxProofs entries is used (per
	// Verifier; plug a shared one for several replicas).
	ReplayCache DPoPReplayCache
	// MaxProofs bounds the in-memory replay cache. If zero, 100000. Once
	// full of unexpired proofs, new proofs are refused (fail closed).
	MaxProofs int
	// RequestURL returns the URL the client addressed, for the "htu"
	// check; query and fragment are ignored. If nil, it is built from the
	// request: https when r.TLS is set (else http), r.Host and
	// r.URL.Path. Behind a proxy that terminates TLS or rewrites paths,
	// set it.
	RequestURL func(r *http.Request) string
}

// DPoPReplayCache remembers DPoP proofs. Implementations must be safe for
// concurrent use.
type DPoPReplayCache interface {
	// Seen records id (a hash naming one proof, never a token or a proof)
	// until expires and reports whether it was already recorded and not
	// yet expired. It must be atomic: of two concurrent calls with one id,
	// at most one reports false.
	Seen(ctx context.Context, id string, expires time.Time) (bool, error)
}

func (c *DPoPConfig) validate() error {
	for _, a := range c.Algorithms {
		if !supportedAlgorithm(a) {
			return fmt.Errorf("authfallback: DPoP algorithm %q is not allowed (asymmetric algorithms only)", a)
		}
	}
	if c.MaxAge < 0 || c.ClockSkew < 0 || c.MaxProofs < 0 {
		return errors.New("authfallback: negative duration or size in Config.DPoP")
	}
	return nil
}

type dpopChecker struct {
	algs     []string
	algsAttr string
	parser   *jwt.Parser
	maxAge   time.Duration
	skew     time.Duration
	replay   DPoPReplayCache
	reqURL   func(*http.Request) string
}

func newDPoPChecker(c *DPoPConfig, leeway time.Duration) *dpopChecker {
	d := &dpopChecker{algs: c.Algorithms, maxAge: c.MaxAge, skew: c.ClockSkew, replay: c.ReplayCache, reqURL: c.RequestURL}
	if len(d.algs) == 0 {
		d.algs = []string{"ES256", "EdDSA", "RS256", "PS256"}
	}
	d.algs = append([]string(nil), d.algs...)
	d.algsAttr = strings.Join(d.algs, " ")
	if d.maxAge == 0 {
		d.maxAge = DefaultDPoPMaxAge
	}
	if d.skew == 0 {
		d.skew = DefaultDPoPClockSkew
	}
	d.maxAge += leeway
	d.skew += leeway
	if d.replay == nil {
		n := c.MaxProofs
		if n == 0 {
			n = DefaultMaxDPoPProofs
		}
		d.replay = NewMemoryDPoPReplayCache(n)
	}
	if d.reqURL == nil {
		d.reqURL = defaultRequestURL
	}
	d.parser = jwt.NewParser(jwt.WithValidMethods(d.algs), jwt.WithoutClaimsValidation())
	return d
}

func defaultRequestURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + r.URL.EscapedPath()
}

// requestToken returns the access token of an Authorization header with
// the Bearer (RFC 6750) or the DPoP (RFC 9449 §7.1) scheme, and whether
// the scheme was DPoP.
func requestToken(r *http.Request) (raw string, dpop bool, ok bool) {
	if raw, ok := BearerToken(r); ok {
		return raw, false, true
	}
	vals := r.Header.Values("Authorization")
	if len(vals) != 1 {
		return "", false, false
	}
	h := vals[0]
	const scheme = "dpop "
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", false, false
	}
	tok := strings.TrimLeft(h[len(scheme):], " ")
	if tok == "" || hasTokenSeparator(tok) {
		return "", false, false
	}
	return tok, true, true
}

// dpopSchemeError marks an error of a request made under the DPoP scheme,
// so that its challenge is a DPoP one.
type dpopSchemeError struct{ err error }

func (e *dpopSchemeError) Error() string { return e.err.Error() }
func (e *dpopSchemeError) Unwrap() error { return e.err }

// VerifyRequest verifies the access token of r (Authorization: Bearer or
// DPoP) as Handler does, DPoP proof included, and returns the Result.
func (v *Verifier) VerifyRequest(r *http.Request) (*Result, error) {
	raw, dpop, ok := requestToken(r)
	if !ok {
		return nil, ErrNoToken
	}
	res, err := v.Verify(r.Context(), raw)
	return v.checkDPoP(r, raw, dpop, res, err)
}

// checkDPoP applies the token binding to a verified res (or passes err
// on, marked when the scheme was DPoP).
func (v *Verifier) checkDPoP(r *http.Request, raw string, dpop bool, res *Result, err error) (*Result, error) {
	if err != nil {
		if dpop {
			return nil, &dpopSchemeError{err}
		}
		return nil, err
	}
	jkt, bound, berr := res.dpopThumbprint()
	switch {
	case berr != nil:
		return nil, v.dpopRefused(r, res, berr)
	case !bound && !dpop:
		return res, nil
	case !bound:
		return nil, &dpopSchemeError{fmt.Errorf("%w: the token is not bound to a key, use the Bearer scheme", ErrDPoPBinding)}
	case !dpop:
		return nil, v.dpopRefused(r, res, fmt.Errorf("%w: the token is bound to a key, use the DPoP scheme with a proof", ErrDPoPBinding))
	}
	proofs := r.Header.Values("DPoP")
	if len(proofs) != 1 {
		return nil, v.dpopRefused(r, res, fmt.Errorf("%w: exactly one DPoP header is required", ErrInvalidDPoPProof))
	}
	if err := v.idp.dpop.check(r, proofs[0], raw, jkt, time.Now()); err != nil {
		return nil, v.dpopRefused(r, res, err)
	}
	return res, nil
}

// dpopRefused audits the refusal of a bound token (a stolen token used
// without its key looks like this) and marks err for a DPoP challenge.
func (v *Verifier) dpopRefused(r *http.Request, res *Result, err error) error {
	v.audit.LogAttrs(r.Context(), slog.LevelWarn, "authfallback: bound token refused",
		slog.String("token_hash", res.TokenHash), slog.String("sub", res.Subject),
		slog.String("reason", res.Reason), slog.String("error", err.Error()))
	return &dpopSchemeError{err}
}

// dpopThumbprint returns the cnf.jkt of r, whether r is bound at all, and
// an error for a confirmation that cannot be checked here.
func (r *Result) dpopThumbprint() (string, bool, error) {
	c, ok := r.Claims["cnf"]
	if !ok {
		return "", false, nil
	}
	m, ok := c.(map[string]any)
	if !ok {
		return "", true, fmt.Errorf("%w: cnf is not an object", ErrDPoPBinding)
	}
	jkt, ok := m["jkt"].(string)
	if !ok || jkt == "" {
		// e.g. x5t#S256 (mTLS binding, RFC 8705): not checkable here, so
		// never accepted as a bearer token.
		return "", true, fmt.Errorf("%w: unsupported confirmation method", ErrDPoPBinding)
	}
	return jkt, true, nil
}

// carryBinding copies the confirmation ("cnf") of a primary token into
// the claims of the offline token exchanged for it, so that exchanging a
// DPoP-bound token never yields a bearer token: the offline token needs a
// proof of the same key.
func carryBinding(claims map[string]any, primary *Result) {
	if cnf, ok := primary.Claims["cnf"]; ok {
		claims["cnf"] = cnf
	}
}

// DPoPThumbprint returns the RFC 7638 thumbprint the token is bound to
// ("cnf"."jkt"), "" when it is not bound.
func (r *Result) DPoPThumbprint() string {
	jkt, _, _ := r.dpopThumbprint()
	return jkt
}

// dpopProof is a DPoP proof whose signature was verified.
type dpopProof struct {
	// Thumbprint is the RFC 7638 thumbprint of the proof's public key.
	Thumbprint string
	// Method and URL are "htm" and "htu"; ID is "jti".
	Method, URL, ID string
	// IssuedAt is "iat".
	IssuedAt time.Time
	// AccessTokenHash is "ath", "" if absent.
	AccessTokenHash string
}

// check verifies one proof for r, bound to raw and jkt.
func (d *dpopChecker) check(r *http.Request, proof, raw, jkt string, now time.Time) error {
	p, err := d.parse(proof)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare([]byte(p.Thumbprint), []byte(jkt)) != 1 {
		return fmt.Errorf("%w: signed by a key other than the one the token is bound to", ErrInvalidDPoPProof)
	}
	if p.Method != r.Method {
		return fmt.Errorf("%w: htm is not the request method", ErrInvalidDPoPProof)
	}
	if !sameHTU(p.URL, d.reqURL(r)) {
		return fmt.Errorf("%w: htu is not the request URL", ErrInvalidDPoPProof)
	}
	if p.IssuedAt.Before(now.Add(-d.maxAge)) || p.IssuedAt.After(now.Add(d.skew)) {
		return fmt.Errorf("%w: iat outside the accepted window", ErrInvalidDPoPProof)
	}
	ath := sha256.Sum256([]byte(raw))
	want := base64.RawURLEncoding.EncodeToString(ath[:])
	if subtle.ConstantTimeCompare([]byte(p.AccessTokenHash), []byte(want)) != 1 {
		return fmt.Errorf("%w: ath is not the hash of the access token", ErrInvalidDPoPProof)
	}
	id := sha256.Sum256([]byte(p.Thumbprint + "\x00" + p.ID))
	seen, err := d.replay.Seen(r.Context(), hex.EncodeToString(id[:]), p.IssuedAt.Add(d.maxAge+d.skew))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDPoPReplayStore, err)
	}
	if seen {
		return fmt.Errorf("%w: proof replayed (jti seen before)", ErrInvalidDPoPProof)
	}
	return nil
}

// parse parses a DPoP proof and verifies its signature (RFC 9449 §4.2,
// §4.3 steps 2-6) under the allow-list: typ "dpop+jwt", a public "jwk"
// header (private parameters refused) that verifies the signature, and the
// claims jti, htm, htu and iat. The request, the time window and the
// replay cache are check's. Errors match ErrInvalidDPoPProof.
func (d *dpopChecker) parse(proof string) (*dpopProof, error) {
	if len(proof) > MaxDPoPProofSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalidDPoPProof, MaxDPoPProofSize)
	}
	var jkt string
	claims := jwt.MapClaims{}
	_, err := d.parser.ParseWithClaims(proof, claims, func(t *jwt.Token) (any, error) {
		// A media type: case-insensitive, "application/" optional (RFC
		// 7515 §4.1.9).
		typ, _ := t.Header["typ"].(string)
		if !strings.EqualFold(strings.TrimPrefix(strings.ToLower(typ), "application/"), "dpop+jwt") {
			return nil, errors.New(`typ is not "dpop+jwt"`)
		}
		if _, ok := t.Header["crit"]; ok {
			return nil, errCrit
		}
		pub, tp, err := dpopKey(t.Header["jwk"], t.Method.Alg())
		if err != nil {
			return nil, err
		}
		jkt = tp
		return pub, nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidDPoPProof, err)
	}
	p := &dpopProof{Thumbprint: jkt}
	var ok bool
	if p.ID, ok = claims["jti"].(string); !ok || p.ID == "" || len(p.ID) > 512 {
		return nil, fmt.Errorf("%w: missing jti", ErrInvalidDPoPProof)
	}
	if p.Method, ok = claims["htm"].(string); !ok || p.Method == "" {
		return nil, fmt.Errorf("%w: missing htm", ErrInvalidDPoPProof)
	}
	if p.URL, ok = claims["htu"].(string); !ok || p.URL == "" {
		return nil, fmt.Errorf("%w: missing htu", ErrInvalidDPoPProof)
	}
	if p.IssuedAt, ok = numericDate(claims["iat"]); !ok {
		return nil, fmt.Errorf("%w: missing or non-numeric iat", ErrInvalidDPoPProof)
	}
	if x, present := claims["ath"]; present {
		if p.AccessTokenHash, ok = x.(string); !ok {
			return nil, fmt.Errorf("%w: non-string ath", ErrInvalidDPoPProof)
		}
	}
	return p, nil
}

// dpopKey turns the "jwk" header of a proof into a public key for alg, and
// its RFC 7638 thumbprint. Private parameters, symmetric keys, weak RSA
// moduli and points off the curve are refused.
func dpopKey(h any, alg string) (any, string, error) {
	obj, ok := h.(map[string]any)
	if !ok {
		return nil, "", errors.New("no jwk header")
	}
	for _, name := range []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"} {
		if _, priv := obj[name]; priv {
			return nil, "", errors.New("the jwk header holds private or symmetric key material")
		}
	}
	str := func(name string) string { s, _ := obj[name].(string); return s }
	km := jwkset.JWKMarshal{
		KTY: jwkset.KTY(str("kty")), CRV: jwkset.CRV(str("crv")),
		X: str("x"), Y: str("y"), N: str("n"), E: str("e"),
	}
	if !algFitsKey(alg, km) {
		return nil, "", errors.New("the jwk header does not fit the alg")
	}
	var members map[string]string
	switch km.KTY {
	case jwkset.KtyEC:
		members = map[string]string{"crv": string(km.CRV), "kty": "EC", "x": km.X, "y": km.Y}
	case jwkset.KtyRSA:
		members = map[string]string{"e": km.E, "kty": "RSA", "n": km.N}
	case jwkset.KtyOKP:
		members = map[string]string{"crv": string(km.CRV), "kty": "OKP", "x": km.X}
	}
	for _, m := range members {
		if m == "" {
			return nil, "", errors.New("the jwk header lacks a required member")
		}
	}
	jwk, err := jwkset.NewJWKFromMarshal(km, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("the jwk header is not a valid key: %w", err)
	}
	pub := jwk.Key()
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits || k.N.BitLen() > maxRSABits || k.E < 3 || k.E%2 == 0 || k.E > 1<<31-1 {
			return nil, "", errors.New("the jwk header holds an unacceptable RSA key")
		}
	case *ecdsa.PublicKey:
		if !ecOnCurve(k) {
			return nil, "", errors.New("the jwk header holds an invalid EC key")
		}
	case ed25519.PublicKey:
	default:
		return nil, "", errors.New("the jwk header holds an unsupported key")
	}
	return pub, JWKThumbprint(members), nil
}

// JWKThumbprint returns the RFC 7638 SHA-256 thumbprint (base64url, no
// padding) of a JWK given by its required members (for EC: crv, kty, x,
// y; RSA: e, kty, n; OKP: crv, kty, x).
func JWKThumbprint(members map[string]string) string {
	// encoding/json writes map keys sorted and without whitespace, as RFC
	// 7638 §3.3 requires.
	b, _ := json.Marshal(members)
	sum := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// sameHTU compares a proof's htu with the request URL, ignoring query and
// fragment, after syntax- and scheme-based normalization (case of scheme
// and host, default port, empty path).
func sameHTU(htu, req string) bool {
	a, ok1 := normalizeHTU(htu)
	b, ok2 := normalizeHTU(req)
	return ok1 && ok2 && a == b
}

func normalizeHTU(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" || u.User != nil {
		return "", false
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "https" && scheme != "http" {
		return "", false
	}
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	p := u.EscapedPath()
	if p == "" {
		p = "/"
	}
	return scheme + "://" + host + p, true
}

// writeIDPError writes the default response of the errors of
// introspection and of requests under the DPoP scheme (RFC 9449 §7.1), and
// reports whether it did; the others are left to writeError.
func (v *Verifier) writeIDPError(w http.ResponseWriter, r *http.Request, err error) bool {
	realm := ""
	if v.cfg.Realm != "" {
		realm = `realm="` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v.cfg.Realm) + `", `
	}
	var se *dpopSchemeError
	switch {
	case errors.Is(err, ErrDPoPReplayStore):
		problem.Render(v.cfg.WriteProblem, w, r, problem.Problem{
			Type:       ProblemUnavailable,
			Title:      "Authentication temporarily unavailable",
			Status:     http.StatusServiceUnavailable,
			Detail:     "DPoP proofs cannot be checked for replay right now",
			RetryAfter: time.Second,
		})
		return true
	case errors.Is(err, ErrIntrospectionUnavailable):
		retry := DefaultIntrospectionProbeInterval
		if in := v.idp.intro; in != nil && in.probe > retry {
			retry = in.probe
		}
		problem.Render(v.cfg.WriteProblem, w, r, problem.Problem{
			Type:       ProblemUnavailable,
			Title:      "Authentication temporarily unavailable",
			Status:     http.StatusServiceUnavailable,
			Detail:     "the token introspection endpoint cannot be reached, and this token was not seen valid before",
			RetryAfter: retry,
		})
		return true
	case errors.As(err, &se) && !errors.Is(err, ErrUnavailable):
	case errors.Is(err, ErrInactive):
		problem.Render(v.cfg.WriteProblem, w, r, problem.Problem{
			Type:            ProblemInvalidToken,
			Title:           "Invalid bearer token",
			Status:          http.StatusUnauthorized,
			Detail:          "the access token is not active (revoked, expired or unknown)",
			WWWAuthenticate: "Bearer " + realm + `error="invalid_token"`,
		})
		return true
	default:
		return false
	}
	code, typ, title, detail := "invalid_token", ProblemInvalidToken, "Invalid DPoP-bound token", "the access token is invalid"
	switch {
	case errors.Is(err, ErrInvalidDPoPProof):
		code, typ, title = "invalid_dpop_proof", ProblemInvalidDPoPProof, "Invalid DPoP proof"
		// The reasons are ours or the JWT library's: no secret in them.
		detail = "the DPoP proof is invalid: " + strings.TrimPrefix(err.Error(), ErrInvalidDPoPProof.Error()+": ")
	case errors.Is(err, ErrDPoPBinding):
		detail = "the access token's binding does not match the authorization scheme"
	case errors.Is(err, jwt.ErrTokenExpired):
		detail = "the access token expired"
	case errors.Is(err, ErrRevoked):
		detail = "the access token was revoked"
	case errors.Is(err, ErrInactive):
		detail = "the access token is not active (revoked, expired or unknown)"
	}
	problem.Render(v.cfg.WriteProblem, w, r, problem.Problem{
		Type:            typ,
		Title:           title,
		Status:          http.StatusUnauthorized,
		Detail:          detail,
		WWWAuthenticate: "DPoP " + realm + `error="` + code + `", algs="` + v.idp.dpop.algsAttr + `"`,
	})
	return true
}

// MemoryDPoPReplayCache is the in-memory [DPoPReplayCache]: bounded, safe
// for concurrent use. Build it with [NewMemoryDPoPReplayCache].
type MemoryDPoPReplayCache struct {
	max int
	mu  sync.Mutex
	m   map[string]time.Time
}

// NewMemoryDPoPReplayCache returns a replay cache of at most max unexpired
// entries (if max <= 0, DefaultMaxDPoPProofs); once full, Seen fails.
func NewMemoryDPoPReplayCache(max int) *MemoryDPoPReplayCache {
	if max <= 0 {
		max = DefaultMaxDPoPProofs
	}
	return &MemoryDPoPReplayCache{max: max, m: make(map[string]time.Time)}
}

// errReplayFull is the error of a full in-memory replay cache.
var errReplayFull = errors.New("authfallback: DPoP replay cache full")

// Seen implements DPoPReplayCache.
func (c *MemoryDPoPReplayCache) Seen(_ context.Context, id string, expires time.Time) (bool, error) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if exp, ok := c.m[id]; ok && now.Before(exp) {
		return true, nil
	}
	if len(c.m) >= c.max {
		for k, exp := range c.m {
			if !now.Before(exp) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= c.max {
			return false, errReplayFull
		}
	}
	c.m[id] = expires
	return false, nil
}
