package authfallback

import (
	"context"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Exchanging a DPoP-bound token for an offline token never yields a
// bearer token: the offline token carries the same confirmation.
func TestOfflineTokenKeepsDPoPBinding(t *testing.T) {
	o, _ := newOfflineT(t, nil)
	for name, cnf := range map[string]any{
		"bound":   map[string]any{"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"},
		"unbound": nil,
	} {
		t.Run(name, func(t *testing.T) {
			primary := offlinePrimary()
			if cnf != nil {
				primary.Claims["cnf"] = cnf
			}
			tok, err := o.Issue(context.Background(), primary, nil)
			require.NoError(t, err)
			claims := jwt.MapClaims{}
			_, _, err = jwt.NewParser().ParseUnverified(tok.Token, claims)
			require.NoError(t, err)
			if cnf == nil {
				assert.NotContains(t, claims, "cnf")
				return
			}
			assert.Equal(t, cnf, claims["cnf"])
			res := &Result{Claims: claims}
			assert.Equal(t, "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I", res.DPoPThumbprint())
		})
	}
}
