package stack

// Benchmarks of the whole stack, each against its bare baseline in the same
// run (issue 17):
//
//	go test -run '^$' -bench 'BenchmarkServerStack|BenchmarkClientStack|BenchmarkLoopback' -benchmem -count=3 ./examples/internal/stack/
//
// The server stack is the README's wiring: degrade gate -> authfallback
// Handler -> idempotency -> degrade.Stale -> route breaker -> an app that
// writes 1 KiB of JSON, with a repeated (cached) token and the memory store.
// The client stack is the README's too: idempotency.Transport ->
// degrade.Stale.Transport -> retry.Transport -> breaker.Transport (default
// 2 s per-call timeout) -> a stub.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/golang-jwt/jwt/v5"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
	"github.com/holdfast-go/holdfast/breaker"
	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/examples/internal/downstream"
	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/retry"
)

var body1K = func() []byte {
	b := []byte(`{"id":"42","name":"`)
	b = append(b, bytes.Repeat([]byte("x"), 1024-len(b)-2)...)
	return append(b, `"}`...)
}()

// app1K is the app behind the stack: a GET answers 200 with 1 KiB of JSON,
// a POST reads its body and answers 201 with the same.
var app1K = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	status := http.StatusOK
	if r.Method == http.MethodPost {
		_, _ = io.Copy(io.Discard, r.Body)
		status = http.StatusCreated
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body1K)
})

// cpuTime returns the user and system CPU time of the process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the process's CPU time per op (GC included) when the
// benchmark ends: on a shared machine wall time swings with the
// neighbours' load, CPU time much less. Call it after ResetTimer.
func reportCPU(b *testing.B) func() {
	cpu0 := cpuTime()
	return func() { b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op") }
}

// benchWriter is a ResponseWriter that costs (almost) nothing.
type benchWriter struct {
	h      http.Header
	status int
}

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) WriteHeader(code int)        { w.status = code }
func (w *benchWriter) Write(p []byte) (int, error) { return len(p), nil }

// storeBound is the bench store's MaxEntries.
const storeBound = 10000

// serverStack is the README's server wiring around app.
type serverStack struct {
	handler http.Handler
	token   string
}

func newServerStack(tb testing.TB, app http.Handler) *serverStack {
	tb.Helper()
	idp := authtest.New()
	tb.Cleanup(idp.Close)
	quiet := slog.New(slog.DiscardHandler)

	var ctrl *degrade.Controller
	// The store is bounded at storeBound records, and BenchmarkServerStack
	// fills it before the keyed writes, so that each write evicts the
	// oldest record: the steady state of a store in service. A store sized
	// for its TTL pays alike, one record removed per record written
	// (expired and swept rather than evicted); a store that never fills
	// measures the heap's growth instead, which costs about as much.
	store := idempotency.NewMemoryStore(idempotency.MemoryConfig{MaxEntries: storeBound})
	tb.Cleanup(func() { _ = store.Close() })
	idem := idempotency.New(idempotency.Config{Store: store})
	verifier, err := authfallback.New(authfallback.Config{
		Issuer:          idp.Issuer(),
		Audience:        []string{idp.Audience()},
		JWKSURLs:        []string{idp.JWKSURL()},
		CacheFile:       filepath.Join(tb.TempDir(), "jwks.json"),
		Policy:          authfallback.Policy{AllowedScopes: []string{"orders:read", "orders:write"}},
		AuditLog:        quiet,
		OnFallbackEnter: func(ev authfallback.FallbackEvent) { ctrl.SetDown("idp", true, ev.Reason) },
		OnFallbackExit:  func(authfallback.FallbackEvent) { ctrl.SetDown("idp", false, "") },
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = verifier.Close() })
	ctrl = degrade.New(degrade.Config{
		Dependencies: map[string]degrade.Mode{"payments": degrade.Degraded, "idp": degrade.Normal},
		Queue:        verifier.Handler(http.HandlerFunc(idem.Enqueue)),
	})
	tb.Cleanup(ctrl.Close)
	stale := &degrade.Stale{}
	routeBreaker := breaker.New(breaker.Config{
		Key:    routeKey,
		Cached: stale.Lookup,
	})
	h := ctrl.Handler(verifier.Handler(idem.Handler(stale.Handler(routeBreaker.Handler(app)))))
	tok := idp.Issue(jwt.MapClaims{"sub": "alice", "scope": "orders:read orders:write"})
	return &serverStack{handler: h, token: tok}
}

// routeKey stands for the README's Key (the pattern mux.Handler picks,
// method included): a constant string per route, without the mux's
// matching, which the bare app does not do either.
func routeKey(r *http.Request) string {
	switch {
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/items/"):
		return "GET /items/{id}"
	case r.Method == http.MethodPost && r.URL.Path == "/orders":
		return "POST /orders"
	}
	return "other"
}

// benchServe runs h with a new request (newRequest) and a new
// httptest.ResponseRecorder per op, as a server makes a request and a
// response per request, with the key that key(i) returns (none if key is
// nil); it fails unless h answers want.
func benchServe(b *testing.B, h http.Handler, newRequest func() *http.Request, want int, key func(i int) string) {
	b.ReportAllocs()
	b.ResetTimer()
	defer reportCPU(b)()
	for i := 0; b.Loop(); i++ {
		r := newRequest()
		if key != nil {
			r.Header[idempotency.HeaderKey] = []string{key(i)}
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want {
			b.Fatalf("status %d, want %d", w.Code, want)
		}
	}
}

// benchServeReused runs h with one request and one writer reused, so that
// only the middleware is measured, not the making of requests and
// responses.
func benchServeReused(b *testing.B, h http.Handler, r *http.Request) {
	w := &benchWriter{h: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	defer reportCPU(b)()
	for b.Loop() {
		clear(w.h)
		w.status = 0
		h.ServeHTTP(w, r)
		if w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
	}
}

// floor is what the stack cannot do without on a read with a cached
// token, around next: the SHA-256 of the token that keys the verified-token
// cache (which holds no raw token), the context value and request copy
// that carry the verified caller, and the request copy that carries the
// route breaker's per-call deadline (here an already-made context: the
// breaker's makes no timer). The stack's cost over floor is its logic.
func floor(next http.Handler) http.Handler {
	type key struct{}
	deadline, cancel := context.WithTimeout(context.Background(), time.Hour)
	_ = cancel // lives as long as the benchmark
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256(unsafe.Slice(unsafe.StringData(raw), len(raw))) // as Verify: no copy
		r = r.WithContext(context.WithValue(r.Context(), key{}, sum[0]))
		r = r.WithContext(deadline)
		next.ServeHTTP(w, r)
	})
}

func newBenchRequest(method, path, token string, body []byte) *http.Request {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	r := httptest.NewRequest(method, path, rd)
	r.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	return r
}

// BenchmarkServerStack compares the README's server stack with the bare app,
// in process: a read with a cached token, a keyed write (a new key each
// time), and a replay (a key from a set of 1024 already written).
func BenchmarkServerStack(b *testing.B) {
	order := []byte(`{"write_id":"w1","amount":5}`)
	st := newServerStack(b, app1K)
	newKey := func(i int) string { return `"k` + strconv.Itoa(i) + `"` }
	read := func() *http.Request { return newBenchRequest(http.MethodGet, "/items/42", st.token, nil) }
	write := func() *http.Request { return newBenchRequest(http.MethodPost, "/orders", st.token, order) }
	b.Run("read/bare", func(b *testing.B) { benchServe(b, app1K, read, 200, nil) })
	b.Run("read/stack", func(b *testing.B) { benchServe(b, st.handler, read, 200, nil) })
	b.Run("read-reused/bare", func(b *testing.B) { benchServeReused(b, app1K, read()) })
	b.Run("read-reused/stack", func(b *testing.B) { benchServeReused(b, st.handler, read()) })
	b.Run("read-reused/floor", func(b *testing.B) { benchServeReused(b, floor(app1K), read()) })
	b.Run("write/bare", func(b *testing.B) { benchServe(b, app1K, write, 201, newKey) })
	var round int
	b.Run("write/stack", func(b *testing.B) {
		if round == 0 {
			// Fill the store: every measured write evicts a record.
			for i := range storeBound {
				r := write()
				r.Header.Set(idempotency.HeaderKey, `"fill-`+strconv.Itoa(i)+`"`)
				st.handler.ServeHTTP(httptest.NewRecorder(), r)
			}
		}
		// Every round of b.Loop uses new keys.
		round++
		prefix := `"w` + strconv.Itoa(round) + "-"
		benchServe(b, st.handler, write, 201, func(i int) string { return prefix + strconv.Itoa(i) + `"` })
	})
	b.Run("replay/stack", func(b *testing.B) {
		const distinct = 1024
		key := func(i int) string { return `"r` + strconv.Itoa(i%distinct) + `"` }
		for i := range distinct {
			r := write()
			r.Header.Set(idempotency.HeaderKey, key(i))
			st.handler.ServeHTTP(httptest.NewRecorder(), r)
		}
		benchServe(b, st.handler, write, 201, key)
	})
}

// stubRT answers every request with a new 200 response of 1 KiB JSON, as a
// downstream's catalogue would (stored by Stale: max-age=0,
// stale-if-error=600), or with Cache-Control: no-store when noStore is set.
type stubRT struct{ noStore bool }

func (s stubRT) RoundTrip(r *http.Request) (*http.Response, error) {
	cc := "max-age=0, stale-if-error=600"
	if s.noStore {
		cc = "no-store"
	}
	return &http.Response{
		StatusCode: 200, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json"}, "Cache-Control": {cc}},
		Body:          io.NopCloser(bytes.NewReader(body1K)),
		ContentLength: int64(len(body1K)),
		Request:       r,
	}, nil
}

// readmeClient is the README's client stack over base.
func readmeClient(base http.RoundTripper) http.RoundTripper {
	hostBreaker := breaker.New(breaker.Config{})
	return &idempotency.Transport{
		Base: (&degrade.Stale{}).Transport(
			&retry.Transport{
				Base: hostBreaker.Transport(base),
			}),
	}
}

func benchRoundTrip(b *testing.B, rt http.RoundTripper, req *http.Request) {
	var buf [2048]byte
	b.ReportAllocs()
	b.ResetTimer()
	defer reportCPU(b)()
	for b.Loop() {
		resp, err := rt.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := resp.Body.Read(buf[:]); err != nil {
				break
			}
		}
		_ = resp.Body.Close()
	}
}

// BenchmarkClientStack compares the README's client stack (default 2 s
// per-call timeout) with the stub it wraps: a GET of a cacheable 1 KiB
// response that Stale stores, a GET of a no-store one, and a POST (which
// idempotency.Transport gives a key).
func BenchmarkClientStack(b *testing.B) {
	get, _ := http.NewRequest(http.MethodGet, "http://downstream.example/items/42", nil)
	get.Header.Set("Authorization", "Bearer service-token")
	post, _ := http.NewRequest(http.MethodPost, "http://downstream.example/ledger", http.NoBody)
	for _, c := range []struct {
		name string
		stub stubRT
		req  *http.Request
	}{
		{"get-stored", stubRT{}, get},
		{"get-no-store", stubRT{noStore: true}, get},
		{"post", stubRT{noStore: true}, post},
	} {
		b.Run(c.name+"/stub", func(b *testing.B) { benchRoundTrip(b, c.stub, c.req) })
		b.Run(c.name+"/stack", func(b *testing.B) { benchRoundTrip(b, readmeClient(c.stub), c.req) })
	}
}

// BenchmarkLoopback compares a read through the server stack with the bare
// app over real loopback HTTP with keep-alive, from parallel clients; the
// throughput ratio is bare ns/op over stack ns/op.
func BenchmarkLoopback(b *testing.B) {
	st := newServerStack(b, app1K)
	run := func(b *testing.B, h http.Handler) {
		srv := httptest.NewServer(h)
		defer srv.Close()
		tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
		defer tr.CloseIdleConnections()
		url := srv.URL + "/items/42"
		auth := "Bearer " + st.token
		var pool sync.Pool
		b.ReportAllocs()
		b.SetParallelism(4)
		b.ResetTimer()
		defer reportCPU(b)()
		b.RunParallel(func(pb *testing.PB) {
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Header.Set("Authorization", auth)
			buf, _ := pool.Get().(*[]byte)
			if buf == nil {
				buf = new([]byte)
				*buf = make([]byte, 4096)
			}
			defer pool.Put(buf)
			for pb.Next() {
				resp, err := tr.RoundTrip(req)
				if err != nil {
					b.Error(err)
					return
				}
				n := 0
				for {
					m, err := resp.Body.Read((*buf)[n:])
					n += m
					if err != nil {
						break
					}
				}
				_ = resp.Body.Close()
				if resp.StatusCode != 200 || n != len(body1K) {
					b.Errorf("status %d, %d bytes", resp.StatusCode, n)
					return
				}
			}
		})
	}
	b.Run("read/bare", func(b *testing.B) { run(b, app1K) })
	b.Run("read/stack", func(b *testing.B) { run(b, st.handler) })
}

// loadRead runs parallel keep-alive GETs of url with auth against a real
// server, failing unless each answers 200.
func loadRead(b *testing.B, url, auth string) {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	defer tr.CloseIdleConnections()
	b.ReportAllocs()
	b.SetParallelism(4)
	b.ResetTimer()
	defer reportCPU(b)()
	b.RunParallel(func(pb *testing.PB) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", auth)
		buf := make([]byte, 4096)
		for pb.Next() {
			resp, err := tr.RoundTrip(req)
			if err != nil {
				b.Error(err)
				return
			}
			for {
				if _, err := resp.Body.Read(buf); err != nil {
					break
				}
			}
			_ = resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

// BenchmarkService compares the example service (Service: the server
// stack, and the client stack to its downstream) with its bare App (a
// plain client), both over loopback HTTP to the same downstream, reading
// an item. The throughput ratio is bare ns/op over service ns/op.
func BenchmarkService(b *testing.B) {
	idp := authtest.New()
	defer idp.Close()
	ds := httptest.NewServer(downstream.New())
	defer ds.Close()
	tok := idp.Issue(jwt.MapClaims{"sub": "alice", "scope": "read write"})
	quiet := slog.New(slog.DiscardHandler)
	b.Run("read/bare", func(b *testing.B) {
		app := &App{Client: &http.Client{Transport: NewBaseTransport()}, Downstream: ds.URL}
		srv := httptest.NewServer(app)
		defer srv.Close()
		loadRead(b, srv.URL+"/items/7", "Bearer "+tok)
	})
	b.Run("read/service", func(b *testing.B) {
		svc, err := New(Config{
			Issuer: idp.Issuer(), Audience: []string{idp.Audience()}, JWKSURLs: []string{idp.JWKSURL()},
			CacheFile: filepath.Join(b.TempDir(), "jwks.json"), Downstream: ds.URL,
			AuditLog: quiet, Logger: quiet,
		})
		if err != nil {
			b.Fatal(err)
		}
		defer svc.Close()
		srv := httptest.NewServer(svc)
		defer srv.Close()
		loadRead(b, srv.URL+"/items/7", "Bearer "+tok)
	})
}

// TestBenchStacksAnswer checks that the benchmarked stacks do what they are
// measured doing: the read, write and replay answer as the bare app does.
func TestBenchStacksAnswer(t *testing.T) {
	st := newServerStack(t, app1K)
	w := httptest.NewRecorder()
	st.handler.ServeHTTP(w, newBenchRequest(http.MethodGet, "/items/42", st.token, nil))
	if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), body1K) {
		t.Fatalf("read: %d %q", w.Code, w.Body.String())
	}
	order := []byte(`{"write_id":"w1","amount":5}`)
	for i := range 2 {
		r := newBenchRequest(http.MethodPost, "/orders", st.token, order)
		r.Header.Set(idempotency.HeaderKey, `"t1"`)
		w := httptest.NewRecorder()
		st.handler.ServeHTTP(w, r)
		if w.Code != 201 || !bytes.Equal(w.Body.Bytes(), body1K) {
			t.Fatalf("write %d: %d %q", i, w.Code, w.Body.String())
		}
		if replayed := w.Header().Get("Idempotent-Replayed"); (i == 1) != (replayed != "") {
			t.Fatalf("write %d: Idempotent-Replayed %q", i, replayed)
		}
	}
	get, _ := http.NewRequest(http.MethodGet, "http://downstream.example/items/42", nil)
	resp, err := readmeClient(stubRT{}).RoundTrip(get)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if !bytes.Equal(got, body1K) || !strings.Contains(resp.Header.Get("Cache-Control"), "stale-if-error") {
		t.Fatalf("client: %q %v", got, resp.Header)
	}
}

// TestStackAllocs guards the allocation budgets of issue 17: the server
// stack's middleware on a read with a cached token (the bare app's own
// one excluded), and the client stack with its default per-call timeout
// over the stub.
func TestStackAllocs(t *testing.T) {
	st := newServerStack(t, app1K)
	r := newBenchRequest(http.MethodGet, "/items/42", st.token, nil)
	w := &benchWriter{h: http.Header{}}
	serve := func(h http.Handler) float64 {
		return testing.AllocsPerRun(200, func() {
			clear(w.h)
			h.ServeHTTP(w, r)
		})
	}
	// staleWriter, the breaker's call (status writer + timeout), two
	// request copies (verified caller, deadline) and the caller's context
	// value.
	if extra := serve(st.handler) - serve(app1K); extra > 5 {
		t.Errorf("server read: %v allocations over the bare app, want at most 5", extra)
	}
	get, _ := http.NewRequest(http.MethodGet, "http://downstream.example/items/42", nil)
	get.Header.Set("Authorization", "Bearer service-token")
	post, _ := http.NewRequest(http.MethodPost, "http://downstream.example/ledger", http.NoBody)
	roundTrip := func(rt http.RoundTripper, req *http.Request) float64 {
		var buf [2048]byte
		return testing.AllocsPerRun(200, func() {
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			for {
				if _, err := resp.Body.Read(buf[:]); err != nil {
					break
				}
			}
			_ = resp.Body.Close()
		})
	}
	// The breaker's per-call timeout: the request copy that carries it
	// and the timeout itself (two, on every call); Stale's body wrapper on
	// a stored GET; idempotency.Transport's keyed copy (with its key) and
	// its header map (two: the map and its group) on a POST.
	for _, c := range []struct {
		name string
		stub stubRT
		req  *http.Request
		max  float64
	}{
		{"GET stored", stubRT{}, get, 3},
		{"GET no-store", stubRT{noStore: true}, get, 2},
		{"POST", stubRT{noStore: true}, post, 5},
	} {
		if extra := roundTrip(readmeClient(c.stub), c.req) - roundTrip(c.stub, c.req); extra > c.max {
			t.Errorf("client %s: %v allocations over the stub, want at most %v", c.name, extra, c.max)
		}
	}
}
