package authfallback

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func edDoc(t *testing.T, kid string) ([]byte, ed25519.PrivateKey) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	doc, err := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": base64.RawURLEncoding.EncodeToString(pub),
	}}})
	require.NoError(t, err)
	return doc, priv
}

// TestSharedKeySetIntegrity: the shared key set obeys the CacheFile's
// rules: bound to the issuer and JWKS URLs, refused when invalid, and a
// key changed under a known kid is audited.
func TestSharedKeySetIntegrity(t *testing.T) {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }))
	defer down.Close()
	const iss = "https://idp.test/"
	bind := cacheBinding{issuer: iss, jwksURLs: []string{down.URL}}
	record := func(t *testing.T, doc []byte, b cacheBinding, at time.Time) KeySetRecord {
		ks, err := parseKeySet(doc, []string{"EdDSA"})
		require.NoError(t, err)
		ks.fetchedAt = at
		raw, err := encodeCacheFile(ks, b)
		require.NoError(t, err)
		return KeySetRecord{Issuer: iss, FetchedAt: at, Doc: raw}
	}
	start := func(t *testing.T, st StateStore, file string) (*Verifier, *lockedBuf) {
		audit := &lockedBuf{}
		v, err := New(Config{
			Issuer: iss, Audience: []string{"api"}, JWKSURLs: []string{down.URL}, CacheFile: file,
			HTTPClient: &http.Client{}, State: st, AuditLog: slog.New(slog.NewJSONHandler(audit, nil)),
		})
		require.NoError(t, err)
		t.Cleanup(func() { _ = v.Close() })
		return v, audit
	}
	doc, _ := edDoc(t, "k1")
	now := time.Now()

	t.Run("valid", func(t *testing.T) {
		st := NewMemoryState()
		_, err := st.SaveKeys(context.Background(), record(t, doc, bind, now.Add(-time.Minute)))
		require.NoError(t, err)
		v, audit := start(t, st, "")
		assert.Equal(t, 1, v.Status().KeyCount)
		assert.Contains(t, audit.String(), "key set loaded from shared state")
	})
	for name, rec := range map[string]KeySetRecord{
		"other issuer":    record(t, doc, cacheBinding{issuer: "https://evil.test/", jwksURLs: bind.jwksURLs}, now),
		"other JWKS URLs": record(t, doc, cacheBinding{issuer: iss, jwksURLs: []string{"https://mirror.evil.test/jwks"}}, now),
		"empty set":       {Issuer: iss, FetchedAt: now, Doc: []byte(`{"version":2,"issuer":"` + iss + `","jwks_urls":["` + down.URL + `"],"fetched_at":"` + now.UTC().Format(time.RFC3339Nano) + `","jwks":{"keys":[]}}`)},
		"not JSON":        {Issuer: iss, FetchedAt: now, Doc: []byte(`<html>`)},
		"future":          record(t, doc, bind, now.Add(time.Hour)),
	} {
		t.Run(name, func(t *testing.T) {
			st := NewMemoryState()
			_, err := st.SaveKeys(context.Background(), rec)
			require.NoError(t, err)
			v, audit := start(t, st, "")
			assert.Zero(t, v.Status().KeyCount, "refused")
			assert.Contains(t, audit.String(), "shared key set refused")
		})
	}
	t.Run("changed key under a known kid", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "jwks.json")
		ks, err := parseKeySet(doc, []string{"EdDSA"})
		require.NoError(t, err)
		ks.fetchedAt = now.Add(-10 * time.Minute)
		require.NoError(t, writeCacheFile(file, ks, bind))
		other, _ := edDoc(t, "k1")
		st := NewMemoryState()
		_, err = st.SaveKeys(context.Background(), record(t, other, bind, now.Add(-time.Minute)))
		require.NoError(t, err)
		v, audit := start(t, st, file)
		assert.Equal(t, 1, v.Status().KeyCount)
		assert.Contains(t, audit.String(), "key changed under a known kid")
		assert.Contains(t, audit.String(), "shared state")
	})
}

// countingState counts the calls of a StateStore.
type countingState struct {
	StateStore
	seen, addSeen, addDegraded, load atomic.Int32
}

func (c *countingState) Seen(ctx context.Context, h string) (SeenToken, bool, error) {
	c.seen.Add(1)
	return c.StateStore.Seen(ctx, h)
}

func (c *countingState) AddSeen(ctx context.Context, r []SeenToken) error {
	c.addSeen.Add(1)
	return c.StateStore.AddSeen(ctx, r)
}

func (c *countingState) AddDegraded(ctx context.Context, r []DegradedAcceptance) error {
	c.addDegraded.Add(1)
	return c.StateStore.AddDegraded(ctx, r)
}

func (c *countingState) LoadKeys(ctx context.Context, iss string) (KeySetRecord, bool, error) {
	c.load.Add(1)
	return c.StateStore.LoadKeys(ctx, iss)
}

// TestSharedStateOffTheHotPath: verifications never wait for the store;
// seen-valid records and degraded acceptances are written in batches.
func TestSharedStateOffTheHotPath(t *testing.T) {
	doc, priv := edDoc(t, "k1")
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(doc) }))
	defer jwks.Close()
	st := &countingState{StateStore: NewMemoryState()}
	v, err := New(Config{
		Issuer: "https://idp.test/", Audience: []string{"api"}, JWKSURLs: []string{jwks.URL},
		HTTPClient: &http.Client{}, State: st, StateFlushInterval: time.Hour, AuditLog: slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	loads := st.load.Load()
	var toks []string
	for i := range 20 {
		toks = append(toks, signEd(t, priv, "k1", `{"iss":"https://idp.test/","aud":"api","sub":"u`+strings.Repeat("x", i)+`","exp":`+itoa(time.Now().Add(time.Hour).Unix())+`}`))
	}
	for range 50 {
		for _, tok := range toks {
			_, err := v.Verify(context.Background(), tok)
			require.NoError(t, err)
		}
	}
	assert.Zero(t, st.seen.Load()+st.addSeen.Load()+st.addDegraded.Load(), "1000 verifications, no store call")
	assert.Equal(t, loads, st.load.Load())
	require.NoError(t, v.Close())
	assert.EqualValues(t, 1, st.addSeen.Load(), "one batch, written on Close")
	for _, tok := range toks[:3] {
		h := sha256Sum(tok)
		_, ok, err := st.Seen(context.Background(), hexOf(h))
		require.NoError(t, err)
		assert.True(t, ok)
	}
}

func signEd(t *testing.T, priv ed25519.PrivateKey, kid, payload string) string {
	enc := base64.RawURLEncoding
	ss := enc.EncodeToString([]byte(`{"alg":"EdDSA","kid":"`+kid+`"}`)) + "." + enc.EncodeToString([]byte(payload))
	return ss + "." + enc.EncodeToString(ed25519.Sign(priv, []byte(ss)))
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func sha256Sum(s string) [32]byte { return sha256.Sum256([]byte(s)) }

func hexOf(h [32]byte) string { return hex.EncodeToString(h[:]) }
