package authtest

import (
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// IntrospectionPath is the path of the RFC 7662 introspection endpoint.
const IntrospectionPath = "/oauth/introspect"

// introStore holds the opaque tokens the server issued and the revoked
// ones, by the SHA-256 of the token. Its zero value is ready.
type introStore struct {
	mu      sync.Mutex
	tokens  map[[32]byte]map[string]any
	revoked map[[32]byte]bool
	hits    atomic.Int64
	answer  []byte // if set, the raw body every introspection gets
}

// IntrospectionURL is the URL of the introspection endpoint. It
// authenticates its callers with ClientID and ClientSecret (HTTP Basic,
// client_secret_basic, or client_secret_post), describes the tokens it
// issued (opaque ones from IssueOpaque and JWTs from Issue), and answers
// {"active":false} for a token it did not issue, an expired or a revoked
// one.
func (s *Server) IntrospectionURL() string { return s.srv.URL + IntrospectionPath }

// IntrospectionHits counts requests to the introspection endpoint that
// reached the handler (the outage switches apply to it as to the others).
func (s *Server) IntrospectionHits() int64 { return s.intro.hits.Load() }

// IssueOpaque returns a new opaque (random, not a JWT) access token that
// the introspection endpoint describes with claims. Claims not given get
// defaults: iss (Issuer), aud (Audience), sub ("test-subject"), iat (now),
// exp (now + TokenTTL), jti (random), client_id (ClientID), token_type
// ("Bearer"). A claim set to nil is left out.
func (s *Server) IssueOpaque(claims map[string]any) string {
	now := time.Now()
	c := map[string]any{
		"iss":        s.Issuer(),
		"aud":        s.cfg.Audience,
		"sub":        "test-subject",
		"iat":        now.Unix(),
		"exp":        now.Add(s.cfg.TokenTTL).Unix(),
		"jti":        randomID(),
		"client_id":  s.cfg.ClientID,
		"token_type": "Bearer",
	}
	for name, v := range claims {
		if v == nil {
			delete(c, name)
			continue
		}
		c[name] = v
	}
	tok := "opaque-" + randomID() + randomID()
	s.intro.remember(tok, c)
	return tok
}

// remember makes the introspection endpoint describe tok with claims.
func (st *introStore) remember(tok string, claims map[string]any) {
	st.mu.Lock()
	if st.tokens == nil {
		st.tokens = make(map[[32]byte]map[string]any)
	}
	st.tokens[sha256.Sum256([]byte(tok))] = claims
	st.mu.Unlock()
}

// Revoke revokes a token issued by IssueOpaque or Issue (RFC 7009): from
// now on the introspection endpoint says it is not active.
func (s *Server) Revoke(token string) {
	st := &s.intro
	st.mu.Lock()
	if st.revoked == nil {
		st.revoked = make(map[[32]byte]bool)
	}
	st.revoked[sha256.Sum256([]byte(token))] = true
	st.mu.Unlock()
}

// SetIntrospectionAnswer makes the introspection endpoint answer 200 with
// body for every token (nil: answer normally again), to test malformed
// answers.
func (s *Server) SetIntrospectionAnswer(body []byte) {
	s.intro.mu.Lock()
	s.intro.answer = body
	s.intro.mu.Unlock()
}

func (s *Server) serveIntrospection(w http.ResponseWriter, r *http.Request) {
	st := &s.intro
	st.hits.Add(1)
	if !s.clientPost(w, r) {
		return
	}
	tok := r.PostForm.Get("token")
	if tok == "" {
		oauthError(w, http.StatusBadRequest, "invalid_request")
		return
	}
	h := sha256.Sum256([]byte(tok))
	st.mu.Lock()
	claims, known := st.tokens[h]
	revoked := st.revoked[h]
	answer := st.answer
	st.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if answer != nil {
		_, _ = w.Write(answer)
		return
	}
	var exp int64
	switch e := claims["exp"].(type) {
	case int64:
		exp = e
	case int:
		exp = int64(e)
	case float64:
		exp = int64(e)
	}
	if !known || revoked || (exp != 0 && time.Now().Unix() >= exp) {
		_, _ = w.Write([]byte(`{"active":false}`))
		return
	}
	out := map[string]any{"active": true}
	for k, v := range claims {
		out[k] = v
	}
	_ = json.NewEncoder(w).Encode(out)
}
