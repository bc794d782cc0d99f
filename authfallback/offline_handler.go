package authfallback

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/holdfast-go/holdfast/internal/problem"
)

// OfflineTokenType is the issued_token_type of an exchange response
// (RFC 8693).
const OfflineTokenType = "urn:ietf:params:oauth:token-type:access_token"

// Problem types (RFC 9457 "type" slugs, see internal/problem) written by
// the exchange handler, besides ProblemMissingToken.
const (
	// ProblemOfflineRefused: the caller presented an offline token to get
	// another one.
	ProblemOfflineRefused = "offline-token-refused"
	// ProblemInsufficientScope: no allowed scope is left for the caller.
	ProblemInsufficientScope = "insufficient-scope"
	// ProblemExchangeRateLimited: the subject obtained
	// OfflineConfig.ExchangeRate offline tokens in the last minute (429
	// with Retry-After).
	ProblemExchangeRateLimited = "exchange-rate-limited"
)

// offlineMaxExchangeBody bounds the form of an exchange request.
const offlineMaxExchangeBody = 8 << 10

// offlineExchangeResponse is the JSON answer of the exchange endpoint.
type offlineExchangeResponse struct {
	AccessToken     string `json:"access_token"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	Scope           string `json:"scope"`
	IssuedTokenType string `json:"issued_token_type"`
}

// ExchangeHandler returns the token exchange endpoint. It must run behind
// [Verifier.Handler] (or anything that puts a verified [Result] in the
// request context with [NewContext]): the caller authenticates with its
// primary token and receives an offline token for the same subject.
//
// The request is a POST; an optional form field "scope"
// (application/x-www-form-urlencoded, space-separated) narrows the scopes.
// The answer is JSON, like an OAuth 2.0 token response (RFC 6749 §5.1,
// RFC 8693 §2.2.1):
//
//	{"access_token":"…","token_type":"Bearer","expires_in":300,
//	 "scope":"orders:read","issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}
//
// Errors are RFC 9457 problems: 401 without a verified caller, 403 for an
// offline token presented to obtain another one, a caller whose token
// Issue refuses (expired, taken in its expired grace window, for no
// audience of offline tokens) or when no allowed scope is left, 429 with
// Retry-After past OfflineConfig.ExchangeRate, 405 for another method, 400
// for a malformed form. OfflineConfig.WriteProblem, if set, writes them.
func (o *OfflineIssuer) ExchangeHandler() http.Handler {
	return http.HandlerFunc(o.serveExchange)
}

func (o *OfflineIssuer) serveExchange(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		problem.Render(o.cfg.WriteProblem, w, r, problem.Problem{Type: "method-not-allowed", Status: http.StatusMethodNotAllowed, Instance: r.URL.Path})
		return
	}
	caller, ok := FromContext(r.Context())
	if !ok {
		problem.Render(o.cfg.WriteProblem, w, r, problem.Problem{
			Type: ProblemMissingToken, Title: "Authentication required", Status: http.StatusUnauthorized,
			Detail: "an offline token is issued only to a caller with a verified token", Instance: r.URL.Path,
			WWWAuthenticate: `Bearer error="invalid_token"`,
		})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, offlineMaxExchangeBody)
	if err := r.ParseForm(); err != nil {
		problem.Render(o.cfg.WriteProblem, w, r, problem.Problem{Type: "invalid-request", Status: http.StatusBadRequest, Detail: "malformed form", Instance: r.URL.Path})
		return
	}
	var requested []string
	if _, set := r.PostForm["scope"]; set {
		requested = strings.Fields(r.PostForm.Get("scope"))
		if requested == nil {
			requested = []string{}
		}
	}
	tok, err := o.Issue(r.Context(), caller, requested)
	var rl *RateLimitError
	switch {
	case errors.Is(err, errOfflineNoCaller):
		problem.Render(o.cfg.WriteProblem, w, r, problem.Problem{
			Type: ProblemMissingToken, Title: "Authentication required", Status: http.StatusUnauthorized,
			Detail: err.Error(), Instance: r.URL.Path, WWWAuthenticate: `Bearer error="invalid_token"`,
		})
		return
	case errors.Is(err, errOfflineNoScope):
		problem.Render(o.cfg.WriteProblem, w, r, problem.Problem{
			Type: ProblemInsufficientScope, Title: "Insufficient scope", Status: http.StatusForbidden,
			Detail: err.Error(), Instance: r.URL.Path,
			WWWAuthenticate: `Bearer error="insufficient_scope", scope="` + strings.Join(o.cfg.AllowedScopes, " ") + `"`,
		})
		return
	case errors.As(err, &rl):
		problem.Render(o.cfg.WriteProblem, w, r, problem.Problem{
			Type: ProblemExchangeRateLimited, Title: "Too many offline tokens", Status: http.StatusTooManyRequests,
			Detail: err.Error(), Instance: r.URL.Path, RetryAfter: rl.RetryAfter,
		})
		return
	case errors.Is(err, ErrOfflineRefused):
		problem.Render(o.cfg.WriteProblem, w, r, problem.Problem{Type: ProblemOfflineRefused, Title: "Offline token refused", Status: http.StatusForbidden, Detail: err.Error(), Instance: r.URL.Path})
		return
	case err != nil:
		problem.Render(o.cfg.WriteProblem, w, r, problem.Problem{Status: http.StatusInternalServerError, Instance: r.URL.Path})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	_ = json.NewEncoder(w).Encode(offlineExchangeResponse{
		AccessToken:     tok.Token,
		TokenType:       "Bearer",
		ExpiresIn:       int64(time.Until(tok.ExpiresAt).Round(time.Second) / time.Second),
		Scope:           strings.Join(tok.Scopes, " "),
		IssuedTokenType: OfflineTokenType,
	})
}
