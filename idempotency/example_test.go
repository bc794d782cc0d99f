package idempotency_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/holdfast-go/holdfast/idempotency"
)

type subjectKey struct{}

// authenticate stands for the service's authentication middleware (e.g.
// authfallback's Handler): it verifies the caller and puts the verified
// subject in the context. Never scope by a header the client sets itself.
func authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		subject, ok := map[string]string{"Bearer token-of-alice": "alice"}[r.Header.Get("Authorization")]
		if !ok {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), subjectKey{}, subject)))
	})
}

func Example() {
	store := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
	defer store.Close()
	x := idempotency.New(idempotency.Config{
		Store: store,
		// The verified caller, put in the context by authenticate.
		Scope: func(r *http.Request) string { s, _ := r.Context().Value(subjectKey{}).(string); return s },
	})
	orders := 0
	srv := httptest.NewServer(authenticate(x.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		orders++
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "order %d", orders)
	}))))
	defer srv.Close()

	send := func(key, body string) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/orders", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer token-of-alice")
		req.Header.Set("Idempotency-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		fmt.Println(resp.StatusCode, resp.Header.Get("Idempotent-Replayed"), strings.TrimSpace(string(b)))
	}
	send(`"a1"`, `{"sku":7}`)
	send(`"a1"`, `{"sku":7}`) // a retry: replayed
	send(`"a1"`, `{"sku":8}`) // the same key for another order
	fmt.Println("orders:", orders)
	// Output:
	// 201  order 1
	// 201 true order 1
	// 422  {"detail":"This Idempotency-Key was used with a different request.","status":422,"title":"Idempotency-Key reused","type":"https://holdfast-go.github.io/problems/idempotency-key-reused"}
	// orders: 1
}

func ExampleTransport() {
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Header.Get("Idempotency-Key"))
	}))
	defer srv.Close()

	// Place it above a retrying transport: every retry has the same key.
	client := &http.Client{Transport: &idempotency.Transport{Base: srv.Client().Transport}}
	resp, err := client.Post(srv.URL, "application/json", strings.NewReader(`{}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	fmt.Println(len(seen), len(seen[0]) == len(`"`+idempotency.NewKey()+`"`))
	// Output: 1 true
}

func ExampleIdempotency_Replay() {
	store := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
	defer store.Close()
	x := idempotency.New(idempotency.Config{Store: store})
	app := x.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "ran %s", b)
	}))

	// During the outage, a gate hands writes to Enqueue.
	req := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader("order-1"))
	req.Header.Set("Idempotency-Key", `"k1"`)
	w := httptest.NewRecorder()
	x.Enqueue(w, req)
	fmt.Println(w.Code, w.Header().Get("Location"))

	// On recovery.
	n, err := x.Replay(context.Background(), app)
	fmt.Println(n, err)

	// The client polls with the same request and key.
	req = httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader("order-1"))
	req.Header.Set("Idempotency-Key", `"k1"`)
	w = httptest.NewRecorder()
	app.ServeHTTP(w, req)
	fmt.Println(w.Code, w.Header().Get("Idempotent-Replayed"), w.Body.String())
	// Output:
	// 202 /orders
	// 1 <nil>
	// 201 true ran order-1
}

func ExampleConfig_onRelease() {
	store := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
	defer store.Close()
	x := idempotency.New(idempotency.Config{
		Store: store,
		OnRelease: func(e idempotency.Event) {
			fmt.Println("released:", e.Reason, e.Status)
		},
	})
	h := x.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable) // try again later: not stored
	}))
	req := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader("x"))
	req.Header.Set("Idempotency-Key", "k")
	h.ServeHTTP(httptest.NewRecorder(), req)
	// Output: released: status 503
}
