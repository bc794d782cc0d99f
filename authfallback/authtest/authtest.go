package authtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// Paths served by a Server.
const (
	JWKSPath      = "/.well-known/jwks.json"
	TokenPath     = "/oauth/token"
	DiscoveryPath = "/.well-known/openid-configuration"
)

// Config configures a Server. Every zero value has a documented default.
type Config struct {
	// Algorithm signs tokens: "RS256", "ES256" or "EdDSA". If empty, RS256.
	Algorithm string
	// Audience is the "aud" of issued tokens. If empty, "test-api".
	Audience string
	// TokenTTL is the lifetime of issued tokens. If zero, 1 hour.
	TokenTTL time.Duration
	// ClientID and ClientSecret are the client credentials the token
	// endpoint accepts. If empty, "test-client" and "test-secret".
	ClientID, ClientSecret string
	// ExtraKeys publishes this many additional public keys of Algorithm in
	// the key set, which sign nothing (to test large key sets). RSA keys
	// take a while to generate.
	ExtraKeys int
}

// Server is a fake identity provider on an httptest.Server: a JWKS
// endpoint, an OAuth 2.0 token endpoint (client_credentials), key rotation
// and outage switches. It is safe for concurrent use.
type Server struct {
	cfg Config
	srv *httptest.Server
	ln  *switchListener
	h   http.Handler

	mu      sync.Mutex
	keys    []*signingKey // current key last
	extra   []*signingKey
	empty   bool
	garbage bool
	fail5xx bool
	slow    time.Duration
	down    bool

	jwksHits  atomic.Int64
	tokenHits atomic.Int64

	// intro holds the opaque tokens and revocations (introspect.go).
	intro introStore
}

type signingKey struct {
	kid    string
	alg    string
	method jwt.SigningMethod
	priv   crypto.Signer
	jwk    jwkset.JWKMarshal
}

// New starts a fake IdP that signs with RS256. Close it when done.
func New() *Server { return NewWithConfig(Config{}) }

// NewWithConfig starts a fake IdP configured by cfg. It panics if cfg names
// an unsupported algorithm or the server cannot listen. Close it when done.
func NewWithConfig(cfg Config) *Server {
	if cfg.Algorithm == "" {
		cfg.Algorithm = "RS256"
	}
	if cfg.Audience == "" {
		cfg.Audience = "test-api"
	}
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = time.Hour
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "test-client"
	}
	if cfg.ClientSecret == "" {
		cfg.ClientSecret = "test-secret"
	}
	s := &Server{cfg: cfg}
	s.keys = []*signingKey{mustKey(cfg.Algorithm)}
	for range cfg.ExtraKeys {
		s.extra = append(s.extra, mustKey(cfg.Algorithm))
	}
	ln, err := newSwitchListener()
	if err != nil {
		panic("authtest: " + err.Error())
	}
	s.ln = ln
	mux := http.NewServeMux()
	mux.HandleFunc(JWKSPath, s.serveJWKS)
	mux.HandleFunc(TokenPath, s.serveToken)
	mux.HandleFunc(DiscoveryPath, s.serveDiscovery)
	mux.HandleFunc(IntrospectionPath, s.serveIntrospection)
	s.h = s.outage(mux)
	s.srv = &httptest.Server{Listener: ln, Config: &http.Server{Handler: s.h}}
	s.srv.Start()
	return s
}

func mustKey(alg string) *signingKey {
	k, err := newKey(alg)
	if err != nil {
		panic("authtest: " + err.Error())
	}
	return k
}

func newKey(alg string) (*signingKey, error) { return newKeyWithKID(alg, randomID()) }

func newKeyWithKID(alg, kid string) (*signingKey, error) {
	var priv crypto.Signer
	var method jwt.SigningMethod
	var err error
	switch alg {
	case "RS256":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
		method = jwt.SigningMethodRS256
	case "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		method = jwt.SigningMethodES256
	case "EdDSA":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
		method = jwt.SigningMethodEdDSA
	default:
		return nil, fmt.Errorf("unsupported algorithm %q", alg)
	}
	if err != nil {
		return nil, err
	}
	jwk, err := jwkset.NewJWKFromKey(priv.Public(), jwkset.JWKOptions{
		Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: jwkset.ALG(alg), USE: jwkset.UseSig},
	})
	if err != nil {
		return nil, err
	}
	return &signingKey{kid: kid, alg: alg, method: method, priv: priv, jwk: jwk.Marshal()}, nil
}

func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// URL is the base URL of the server.
func (s *Server) URL() string { return s.srv.URL }

// Issuer is the "iss" of the tokens the server issues: URL() + "/".
func (s *Server) Issuer() string { return s.srv.URL + "/" }

// Audience is the "aud" of the tokens the server issues.
func (s *Server) Audience() string { return s.cfg.Audience }

// JWKSURL is the URL of the key set.
func (s *Server) JWKSURL() string { return s.srv.URL + JWKSPath }

// TokenURL is the URL of the OAuth 2.0 token endpoint.
func (s *Server) TokenURL() string { return s.srv.URL + TokenPath }

// ClientID and ClientSecret are the credentials the token endpoint accepts.
func (s *Server) ClientID() string { return s.cfg.ClientID }

// ClientSecret is the secret of ClientID.
func (s *Server) ClientSecret() string { return s.cfg.ClientSecret }

// Client returns an http.Client that trusts the server.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// Handler returns the handler that serves every endpoint, with the outage
// switches applied, for tests that call it without a network (see
// InProcessTransport).
func (s *Server) Handler() http.Handler { return s.h }

// InProcessTransport returns an http.RoundTripper that serves each request
// with Handler in the calling goroutine, without a network connection; the
// request's host is ignored. While the server is down (SetDown) a request
// fails with an error, as a refused connection would. Use it inside a
// testing/synctest bubble, where real network I/O does not advance the fake
// clock and a server's goroutines do not belong to the bubble.
func (s *Server) InProcessTransport() http.RoundTripper { return inProcess{s} }

type inProcess struct{ s *Server }

func (t inProcess) RoundTrip(r *http.Request) (resp *http.Response, err error) {
	if r.Body != nil {
		defer r.Body.Close()
	}
	t.s.mu.Lock()
	down := t.s.down
	t.s.mu.Unlock()
	if down {
		return nil, fmt.Errorf("authtest: %s %s: connection refused (server down)", r.Method, r.URL)
	}
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	rec := httptest.NewRecorder()
	defer func() {
		if p := recover(); p != nil {
			resp, err = nil, fmt.Errorf("authtest: %s %s: connection reset (%v)", r.Method, r.URL, p)
		}
	}()
	t.s.h.ServeHTTP(rec, r)
	resp = rec.Result()
	resp.Request = r
	return resp, nil
}

// Close shuts the server down.
func (s *Server) Close() { s.srv.Close() }

// KeyID returns the kid of the current signing key.
func (s *Server) KeyID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[len(s.keys)-1].kid
}

// Rotate makes a new signing key current (same algorithm). The previous keys
// stay published until RetireOldKeys, as an IdP does during a rotation.
// It returns the new kid.
func (s *Server) Rotate() string {
	k := mustKey(s.cfg.Algorithm)
	s.mu.Lock()
	s.keys = append(s.keys, k)
	s.mu.Unlock()
	return k.kid
}

// ReplaceKey replaces the current signing key with a new key under the
// same kid (as after a key compromise handled carelessly, or a
// misbehaving IdP): tokens signed with the old key no longer verify, and a
// Verifier that looks keys up by kid alone would not notice. It returns
// the kid.
func (s *Server) ReplaceKey() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.keys[len(s.keys)-1]
	k, err := newKeyWithKID(s.cfg.Algorithm, cur.kid)
	if err != nil {
		panic("authtest: " + err.Error())
	}
	s.keys[len(s.keys)-1] = k
	return k.kid
}

// RetireOldKeys stops publishing every key but the current one.
func (s *Server) RetireOldKeys() {
	s.mu.Lock()
	s.keys = s.keys[len(s.keys)-1:]
	s.mu.Unlock()
}

// Issue returns a token signed with the current key. Claims not given get
// defaults: iss (Issuer), aud (Audience), sub ("test-subject"), iat (now),
// exp (now + TokenTTL) and jti (random). A claim set to nil is left out.
func (s *Server) Issue(claims jwt.MapClaims) string {
	return s.IssueWithHeader(nil, claims)
}

// IssueWithHeader is Issue with extra header parameters; a header set to nil
// is left out (e.g. "kid": nil).
func (s *Server) IssueWithHeader(header map[string]any, claims jwt.MapClaims) string {
	s.mu.Lock()
	k := s.keys[len(s.keys)-1]
	s.mu.Unlock()
	now := time.Now()
	c := jwt.MapClaims{
		"iss": s.Issuer(),
		"aud": s.cfg.Audience,
		"sub": "test-subject",
		"iat": now.Unix(),
		"exp": now.Add(s.cfg.TokenTTL).Unix(),
		"jti": randomID(),
	}
	raw := sign(k.method, k.priv, map[string]any{"kid": k.kid}, header, c, claims)
	s.intro.remember(raw, c) // an IdP knows its tokens: introspection describes them
	return raw
}

// sign signs the claims defaults overridden by claims, with the header
// defaults overridden by header (a value set to nil is left out), with
// priv. A signing failure is the test's bug: it panics.
func sign(method jwt.SigningMethod, priv any, defHeader, header map[string]any, defClaims, claims jwt.MapClaims) string {
	merge(defClaims, claims)
	t := jwt.NewWithClaims(method, defClaims)
	merge(t.Header, defHeader)
	merge(t.Header, header)
	raw, err := t.SignedString(priv)
	if err != nil {
		panic("authtest: signing: " + err.Error())
	}
	return raw
}

// merge sets dst's members to those of src; a nil value removes a member.
func merge[M ~map[string]any](dst M, src map[string]any) {
	for name, v := range src {
		if v == nil {
			delete(dst, name)
			continue
		}
		dst[name] = v
	}
}

// JWKS returns the key set document as currently published (whatever the
// switches say).
func (s *Server) JWKS() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jwksLocked()
}

func (s *Server) jwksLocked() []byte {
	doc := jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{}}
	for i := len(s.keys) - 1; i >= 0; i-- {
		doc.Keys = append(doc.Keys, s.keys[i].jwk)
	}
	for _, k := range s.extra {
		doc.Keys = append(doc.Keys, k.jwk)
	}
	b, _ := json.Marshal(doc)
	return b
}

// SetDown takes the server down (true: the listening socket is closed, so
// new connections are refused at the TCP level, and open connections are
// closed) or brings it back up on the same address. It panics if the
// address cannot be listened on again.
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
	if err := s.ln.setDown(down); err != nil {
		panic("authtest: " + err.Error())
	}
	if down {
		s.srv.CloseClientConnections()
	}
}

// SetFail5xx makes both endpoints answer 503 (true) or not.
func (s *Server) SetFail5xx(on bool) { s.set(func() { s.fail5xx = on }) }

// SetSlow delays every answer by d (0: no delay). The delay ends early when
// the client gives up.
func (s *Server) SetSlow(d time.Duration) { s.set(func() { s.slow = d }) }

// SetEmptyKeySet makes the JWKS endpoint answer 200 {"keys":[]} (true).
func (s *Server) SetEmptyKeySet(on bool) { s.set(func() { s.empty = on }) }

// SetGarbage makes the JWKS endpoint answer 200 with a body that is not
// JSON (true).
func (s *Server) SetGarbage(on bool) { s.set(func() { s.garbage = on }) }

// Reset turns every outage switch off.
func (s *Server) Reset() {
	s.SetDown(false)
	s.set(func() { s.fail5xx, s.slow, s.empty, s.garbage = false, 0, false, false })
}

func (s *Server) set(f func()) {
	s.mu.Lock()
	f()
	s.mu.Unlock()
}

// JWKSHits counts requests to the JWKS endpoint that reached the server.
func (s *Server) JWKSHits() int64 { return s.jwksHits.Load() }

// TokenHits counts requests to the token endpoint that reached the server.
func (s *Server) TokenHits() int64 { return s.tokenHits.Load() }

// outage applies the down, slow and 5xx switches to every endpoint.
func (s *Server) outage(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case JWKSPath:
			s.jwksHits.Add(1)
		case TokenPath:
			s.tokenHits.Add(1)
		}
		s.mu.Lock()
		down, slow, fail := s.down, s.slow, s.fail5xx
		s.mu.Unlock()
		if down {
			// A connection accepted just before the switch: drop it.
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					_ = c.Close()
					return
				}
			}
			panic(http.ErrAbortHandler)
		}
		if slow > 0 {
			t := time.NewTimer(slow)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		if fail {
			http.Error(w, "upstream unavailable", http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) serveJWKS(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	empty, garbage := s.empty, s.garbage
	body := s.jwksLocked()
	s.mu.Unlock()
	switch {
	case garbage:
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte("<html><body>502 Bad Gateway (cached error page)</body></html>"))
		return
	case empty:
		body = []byte(`{"keys":[]}`)
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	_, _ = w.Write(body)
}

func (s *Server) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"issuer":                                s.Issuer(),
		"jwks_uri":                              s.JWKSURL(),
		"token_endpoint":                        s.TokenURL(),
		"introspection_endpoint":                s.IntrospectionURL(),
		"grant_types_supported":                 []string{"client_credentials"},
		"id_token_signing_alg_values_supported": []string{s.cfg.Algorithm},
	})
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	if !s.clientPost(w, r) {
		return
	}
	if r.PostForm.Get("grant_type") != "client_credentials" {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type")
		return
	}
	claims := jwt.MapClaims{"sub": s.cfg.ClientID, "client_id": s.cfg.ClientID} // the client clientPost authenticated
	scope := strings.Join(strings.Fields(r.PostForm.Get("scope")), " ")
	if scope != "" {
		claims["scope"] = scope
	}
	tok := s.Issue(claims)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	resp := map[string]any{
		"access_token": tok,
		"token_type":   "Bearer",
		"expires_in":   json.Number(strconv.FormatInt(int64(s.cfg.TokenTTL/time.Second), 10)),
	}
	if scope != "" {
		resp["scope"] = scope
	}
	_ = json.NewEncoder(w).Encode(resp)
}

func oauthError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code})
}

// clientPost checks what the token and introspection endpoints require of
// a request: POST, a form, and this server's client credentials (HTTP
// Basic, or client_id and client_secret in the form). It answers the
// request and reports false when one is missing.
func (s *Server) clientPost(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return false
	}
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request")
		return false
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if subtle.ConstantTimeCompare([]byte(id), []byte(s.cfg.ClientID)) != 1 ||
		subtle.ConstantTimeCompare([]byte(secret), []byte(s.cfg.ClientSecret)) != 1 {
		w.Header().Set("WWW-Authenticate", `Basic realm="authtest"`)
		oauthError(w, http.StatusUnauthorized, "invalid_client")
		return false
	}
	return true
}
