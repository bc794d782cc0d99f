package authfallback

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/holdfast-go/holdfast/authfallback/authtest"
)

// benchKeySet returns idp's key set padded with Ed25519 keys to n keys.
func benchKeySet(b *testing.B, idp *authtest.Server, n int) []byte {
	var doc jwkset.JWKSMarshal
	if err := json.Unmarshal(idp.JWKS(), &doc); err != nil {
		b.Fatal(err)
	}
	for len(doc.Keys) < n {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		jwk, err := jwkset.NewJWKFromKey(pub, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: fmt.Sprintf("pad-%d", len(doc.Keys))}})
		if err != nil {
			b.Fatal(err)
		}
		doc.Keys = append(doc.Keys, jwk.Marshal())
	}
	out, err := json.Marshal(doc)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

func benchVerifier(b *testing.B, idp *authtest.Server, doc []byte) *Verifier {
	file := filepath.Join(b.TempDir(), "jwks.json")
	raw, _ := json.Marshal(cacheFileDoc{Version: cacheFileVersion, Issuer: idp.Issuer(), FetchedAt: time.Now(), JWKS: doc})
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		b.Fatal(err)
	}
	v, err := New(Config{
		Issuer: idp.Issuer(), Audience: []string{idp.Audience()}, CacheFile: file,
		AuditLog: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = v.Close() })
	return v
}

// BenchmarkVerify compares Verify with the baseline: bare jwt.Parse with a
// keyfunc from keyfunc.NewJWKSetJSON over the same key set.
//
//	go test -run=^$ -bench=BenchmarkVerify -benchmem ./authfallback/
func BenchmarkVerify(b *testing.B) {
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		idp := authtest.NewWithConfig(authtest.Config{Algorithm: alg})
		defer idp.Close()
		// Distinct tokens, so "new" measures the uncached path including
		// the cache insertion.
		const pool = 256
		toks := make([]string, pool)
		for i := range toks {
			toks[i] = idp.Issue(jwt.MapClaims{"jti": fmt.Sprint(i), "scope": "orders:read orders:write"})
		}
		for _, n := range []int{1, 50} {
			doc := benchKeySet(b, idp, n)
			b.Run(fmt.Sprintf("%s/keys=%d/baseline-jwt.Parse+keyfunc", alg, n), func(b *testing.B) {
				kf, err := keyfunc.NewJWKSetJSON(doc)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if _, err := jwt.Parse(toks[i%pool], kf.Keyfunc); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
			b.Run(fmt.Sprintf("%s/keys=%d/new-token", alg, n), func(b *testing.B) {
				v := benchVerifier(b, idp, doc)
				ctx := context.Background()
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if i%pool == 0 && i > 0 {
						b.StopTimer()
						v.cache.mu.Lock()
						clear(v.cache.m)
						v.cache.mu.Unlock()
						b.StartTimer()
					}
					if _, err := v.Verify(ctx, toks[i%pool]); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
			b.Run(fmt.Sprintf("%s/keys=%d/repeated-token", alg, n), func(b *testing.B) {
				v := benchVerifier(b, idp, doc)
				ctx := context.Background()
				if _, err := v.Verify(ctx, toks[0]); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					if _, err := v.Verify(ctx, toks[0]); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkVerifyParallel measures the cached path under concurrency.
func BenchmarkVerifyParallel(b *testing.B) {
	idp := authtest.NewWithConfig(authtest.Config{Algorithm: "EdDSA"})
	defer idp.Close()
	v := benchVerifier(b, idp, idp.JWKS())
	tok := idp.Issue(nil)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := v.Verify(ctx, tok); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkVerifyVsBaseline interleaves the baseline (jwt.Parse with a
// keyfunc.NewJWKSetJSON keyfunc) and Verify of a new token in the same
// loop, so both see the same machine load, and reports their ratio
// (target: verify/baseline <= 1.1).
func BenchmarkVerifyVsBaseline(b *testing.B) {
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		idp := authtest.NewWithConfig(authtest.Config{Algorithm: alg})
		defer idp.Close()
		const pool = 256
		toks := make([]string, pool)
		for i := range toks {
			toks[i] = idp.Issue(jwt.MapClaims{"jti": fmt.Sprint(i), "scope": "orders:read orders:write"})
		}
		for _, n := range []int{1, 50} {
			doc := benchKeySet(b, idp, n)
			b.Run(fmt.Sprintf("%s/keys=%d", alg, n), func(b *testing.B) {
				kf, err := keyfunc.NewJWKSetJSON(doc)
				if err != nil {
					b.Fatal(err)
				}
				v := benchVerifier(b, idp, doc)
				ctx := context.Background()
				var base, ours time.Duration
				i := 0
				for b.Loop() {
					if i%pool == 0 && i > 0 {
						v.cache.mu.Lock()
						clear(v.cache.m)
						v.cache.mu.Unlock()
					}
					tok := toks[i%pool]
					baseline := func() {
						t0 := time.Now()
						if _, err := jwt.Parse(tok, kf.Keyfunc); err != nil {
							b.Fatal(err)
						}
						base += time.Since(t0)
					}
					verify := func() {
						t0 := time.Now()
						if _, err := v.Verify(ctx, tok); err != nil {
							b.Fatal(err)
						}
						ours += time.Since(t0)
					}
					// Alternate the order so neither profits from going second.
					if i%2 == 0 {
						baseline()
						verify()
					} else {
						verify()
						baseline()
					}
					i++
				}
				b.ReportMetric(float64(base.Nanoseconds())/float64(i), "baseline-ns/op")
				b.ReportMetric(float64(ours.Nanoseconds())/float64(i), "verify-ns/op")
				b.ReportMetric(float64(ours)/float64(base), "ratio")
			})
		}
	}
}

// benchPolicyVerifier is benchVerifier with revocations (10000 jti, 1000
// subjects, none matching), a fallback policy and an offline issuer.
func benchPolicyVerifier(b *testing.B, idp *authtest.Server) *Verifier {
	revs := &MemoryRevocations{}
	revs.update(func(s *revSnapshot) {
		for i := range 10000 {
			s.jti[fmt.Sprint("revoked-", i)] = struct{}{}
		}
		for i := range 1000 {
			s.sub[fmt.Sprint("user-", i)] = time.Now()
		}
	})
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	o, err := NewOfflineIssuer(OfflineConfig{Issuer: "urn:offline", Audience: []string{idp.Audience()}, Key: key,
		AllowedScopes: []string{"orders:read"}, AuditLog: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	file := filepath.Join(b.TempDir(), "jwks.json")
	raw, _ := json.Marshal(cacheFileDoc{Version: cacheFileVersion, Issuer: idp.Issuer(), FetchedAt: time.Now(), JWKS: idp.JWKS()})
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		b.Fatal(err)
	}
	v, err := New(Config{
		Issuer: idp.Issuer(), Audience: []string{idp.Audience()}, CacheFile: file,
		AuditLog: slog.New(slog.DiscardHandler), Revocations: revs, Offline: o,
		Policy: Policy{AllowedScopes: []string{"orders:read"}, MaxTokenAge: time.Hour},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = v.Close() })
	return v
}

// BenchmarkPolicyOverhead measures what revocation and policy checks add
// to a cached verification (target: at most 200 ns), against the same
// cached verification without them, interleaved in one loop so both see
// the same load. "degraded" runs both Verifiers in fallback mode (narrowing,
// record for reconciliation and the audit event included).
//
//	go test -run=^$ -bench=BenchmarkPolicyOverhead -benchmem ./authfallback/
func BenchmarkPolicyOverhead(b *testing.B) {
	idp := authtest.NewWithConfig(authtest.Config{Algorithm: "EdDSA"})
	defer idp.Close()
	tok := idp.Issue(jwt.MapClaims{"sub": "alice", "jti": "a-1", "scope": "orders:read orders:write"})
	for _, degraded := range []bool{false, true} {
		name := "normal"
		if degraded {
			name = "degraded"
		}
		bare := benchVerifier(b, idp, idp.JWKS())
		full := benchPolicyVerifier(b, idp)
		ctx := context.Background()
		for _, v := range []*Verifier{bare, full} {
			if _, err := v.Verify(ctx, tok); err != nil {
				b.Fatal(err)
			}
			if degraded {
				v.fb.Store(&fallbackState{since: time.Now(), reason: ReasonJWKSUnreachable})
			}
		}
		b.Run(name+"/cached-bare", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bare.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/cached-revocations+policy", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := full.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/interleaved", func(b *testing.B) {
			var tb, tf time.Duration
			const batch = 64
			n := 0
			for b.Loop() {
				t0 := time.Now()
				for range batch {
					_, _ = bare.Verify(ctx, tok)
				}
				t1 := time.Now()
				for range batch {
					_, _ = full.Verify(ctx, tok)
				}
				tf += time.Since(t1)
				tb += t1.Sub(t0)
				n += batch
			}
			b.ReportMetric(float64(tb.Nanoseconds())/float64(n), "bare-ns/op")
			b.ReportMetric(float64(tf.Nanoseconds())/float64(n), "full-ns/op")
			b.ReportMetric(float64((tf-tb).Nanoseconds())/float64(n), "added-ns/op")
		})
	}
}

// BenchmarkOnVerify measures the cached verification without and with an
// OnVerify hook (the hook unset must cost nothing: 0 allocs).
//
//	go test -run=^$ -bench=BenchmarkOnVerify -benchmem ./authfallback/
func BenchmarkOnVerify(b *testing.B) {
	idp := authtest.NewWithConfig(authtest.Config{Algorithm: "EdDSA"})
	defer idp.Close()
	tok := idp.Issue(nil)
	ctx := context.Background()
	for _, hooked := range []bool{false, true} {
		v := benchVerifier(b, idp, idp.JWKS())
		if hooked {
			var n int
			v.cfg.OnVerify = func(ev VerifyEvent) { n += int(ev.Latency) & 1 }
		}
		if _, err := v.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("hook=%v", hooked), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
