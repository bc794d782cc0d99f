package authfallback

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/holdfast-go/holdfast/internal/httpx"
	"github.com/holdfast-go/holdfast/internal/problem"
)

// Problem types of the responses Handler writes.
const (
	ProblemMissingToken = "missing-token"
	ProblemInvalidToken = "invalid-token"
	ProblemUnavailable  = "authentication-unavailable"
)

// Handler returns middleware that authenticates every request with the
// bearer token of its Authorization header (RFC 6750) and passes it on with
// the Result in its context ([FromContext]). A degraded request carries the
// Holdfast-Degraded response header with its reason, unless
// Config.DisableDegradedHeader is set. Refused requests are answered by
// Config.ErrorHandler.
func (v *Verifier) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, dpop, ok := requestToken(r)
		if !ok {
			v.fail(w, r, ErrNoToken)
			return
		}
		res, err := v.Verify(r.Context(), raw)
		res, err = v.checkDPoP(r, raw, dpop, res, err)
		if err != nil {
			v.fail(w, r, err)
			return
		}
		if res.Degraded && !v.cfg.DisableDegradedHeader {
			httpx.AddDegraded(w.Header(), res.Reason) // after the gate's mode: every reason is listed
		}
		next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), res)))
	})
}

// BearerToken returns the token of an "Authorization: Bearer <token>"
// header (the scheme is case-insensitive), and false if there is none or
// the header is not exactly one such credential.
func BearerToken(r *http.Request) (string, bool) {
	vals := r.Header.Values("Authorization")
	if len(vals) != 1 {
		return "", false
	}
	h := vals[0]
	const scheme = "bearer "
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", false
	}
	tok := strings.TrimLeft(h[len(scheme):], " ")
	if tok == "" || hasTokenSeparator(tok) {
		return "", false
	}
	return tok, true
}

// hasTokenSeparator reports whether tok holds a space, a tab or a comma
// (more than one credential). Three IndexByte scans (vectorised) cost a
// fraction of strings.ContainsAny's byte-by-byte set lookup over a
// token of a kilobyte.
func hasTokenSeparator(tok string) bool {
	return strings.IndexByte(tok, ' ') >= 0 || strings.IndexByte(tok, '\t') >= 0 || strings.IndexByte(tok, ',') >= 0
}

func (v *Verifier) fail(w http.ResponseWriter, r *http.Request, err error) {
	if v.cfg.ErrorHandler != nil {
		v.cfg.ErrorHandler(w, r, err)
		return
	}
	v.writeError(w, r, err)
}

// writeError is the default ErrorHandler.
func (v *Verifier) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if v.writeIDPError(w, r, err) {
		return
	}
	realm := ""
	if v.cfg.Realm != "" {
		realm = `realm="` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v.cfg.Realm) + `", `
	}
	switch {
	case errors.Is(err, ErrUnavailable):
		retry := time.Until(time.Unix(0, v.nextAttempt.Load()))
		if retry < time.Second {
			retry = time.Second
		}
		if max := v.cfg.refreshInterval(); retry > max {
			retry = max
		}
		detail := "no trusted verification keys are available"
		switch {
		case errors.Is(err, ErrKeysTooStale):
			detail = "the verification keys are too old to be trusted"
		case errors.Is(err, ErrFallbackExpired):
			detail = "the identity provider has been unreachable for longer than the fallback policy allows"
		case errors.Is(err, ErrUnknownKeyID):
			detail = "the token's signing key is not in the key set, which cannot be refreshed now"
		}
		problem.Render(v.cfg.WriteProblem, w, r, problem.Problem{
			Type:       ProblemUnavailable,
			Title:      "Authentication temporarily unavailable",
			Status:     http.StatusServiceUnavailable,
			Detail:     detail,
			RetryAfter: retry,
		})
	case errors.Is(err, ErrNoToken):
		problem.Render(v.cfg.WriteProblem, w, r, problem.Problem{
			Type:            ProblemMissingToken,
			Title:           "Bearer token required",
			Status:          http.StatusUnauthorized,
			WWWAuthenticate: strings.TrimSuffix("Bearer "+strings.TrimSuffix(realm, ", "), " "),
		})
	default:
		detail := "the access token is invalid"
		switch {
		case errors.Is(err, ErrRevoked):
			detail = "the access token was revoked"
		case errors.Is(err, ErrOutsidePolicy):
			detail = "the access token is not accepted under the current fallback policy"
		case errors.Is(err, jwt.ErrTokenExpired):
			detail = "the access token expired"
		}
		problem.Render(v.cfg.WriteProblem, w, r, problem.Problem{
			Type:            ProblemInvalidToken,
			Title:           "Invalid bearer token",
			Status:          http.StatusUnauthorized,
			Detail:          detail,
			WWWAuthenticate: "Bearer " + realm + `error="invalid_token"`,
		})
	}
}
