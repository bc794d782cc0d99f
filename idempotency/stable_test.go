package idempotency_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/internal/caller"
)

// keyRecorder records the record key and fingerprint of each Claim.
type keyRecorder struct {
	idempotency.Store
	keys, fingerprints []string
}

func (s *keyRecorder) Claim(ctx context.Context, key, fingerprint, owner string, lease time.Duration) (idempotency.Record, bool, error) {
	s.keys = append(s.keys, key)
	s.fingerprints = append(s.fingerprints, fingerprint)
	return s.Store.Claim(ctx, key, fingerprint, owner, lease)
}

// TestRecordKeysAreStable pins the record keys and fingerprints: they must
// never change, or a client's retry after an upgrade (within the TTL, on a
// shared store) would run its request again, or get a 422.
func TestRecordKeysAreStable(t *testing.T) {
	cases := []struct {
		name          string
		cfg           idempotency.Config
		caller        *caller.Caller
		target, body  string
		auth          string
		key           string
		wantKey, want string
	}{
		{name: "credentials", target: "/orders?src=test", body: `{"sku":42}`, auth: "Bearer alice", key: `"k1"`,
			wantKey: "e48ce83dee8dd536cacb6f7ec3d9a0c1763777ccb5e07add87fb7fdba8aaf12b",
			want:    "2d86bffb948488542efb81661013320e7e6598ed9c0b5f89cf148f1b0da3c6a4"},
		{name: "caller", caller: caller.New("https://idp.example", "alice", []string{"orders:write"}, "", nil),
			target: "/orders", body: `{"write_id":"w1","amount":5}`, auth: "Bearer t", key: "w1-123",
			wantKey: "2fc13f874221a1339e3101ede11c197d0060bc666092abdae776fe171bb7eb64",
			want:    "eaaf4e04202d1eab557387bfcfa6b0a2bdaa820b97fe47bb7393e931e94e8179"},
		{name: "scope and route", cfg: idempotency.Config{
			Scope: func(*http.Request) string { return "tenant-1" },
			Route: func(*http.Request) string { return "/orders/{id}" }},
			target: "/orders/7%2F8?x=1&y=2", body: "", key: "k",
			wantKey: "c867ce4fd4940e78abddd739638938a59f33951db6e41c1c87db22449f58a2e2",
			want:    "435c365a5976478596bfd489644ac3816d11dc89b73ee5959037b564b103ca46"},
		{name: "large body", target: "/upload", body: strings.Repeat("0123456789", 500), key: "big",
			wantKey: "17b2dca2e21ecd3913b766ac0a761d8fbdc7e4f40af77efc53d4dbeab97520fe",
			want:    "c4e865a2d74bdfa01d6d31c354c2272a923b6f0c93cc3d0233b794f54feaa177"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := &keyRecorder{Store: newStore(t)}
			cfg := c.cfg
			cfg.Store = rec
			h := idempotency.New(cfg).Handler(&orders{})
			r := httptest.NewRequest(http.MethodPost, c.target, strings.NewReader(c.body))
			r.Header.Set("Idempotency-Key", c.key)
			if c.auth != "" {
				r.Header.Set("Authorization", c.auth)
			}
			if c.caller != nil {
				r = r.WithContext(caller.NewContext(r.Context(), c.caller))
			}
			h.ServeHTTP(httptest.NewRecorder(), r)
			require.Len(t, rec.keys, 1)
			assert.Equal(t, c.wantKey, rec.keys[0], "record key")
			assert.Equal(t, c.want, rec.fingerprints[0], "fingerprint")
		})
	}
}
