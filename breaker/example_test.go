package breaker_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/holdfast-go/holdfast/breaker"
)

func ExampleBreaker_Transport() {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer upstream.Close()

	b := breaker.New(breaker.Config{})
	client := &http.Client{Transport: b.Transport(http.DefaultTransport)}
	for range 5 {
		resp, err := client.Get(upstream.URL)
		if err != nil {
			panic(err)
		}
		resp.Body.Close()
	}
	_, err := client.Get(upstream.URL)
	fmt.Println(errors.Is(err, breaker.ErrOpen))
	var open *breaker.OpenError
	if errors.As(err, &open) {
		fmt.Println(open.RetryAfter > 20*time.Second)
	}
	// Output:
	// true
	// true
}

func ExampleBreaker_Handler() {
	// MinCallers: 1 lets the one caller of this example open the route; by
	// default failures of 3 distinct callers are needed.
	b := breaker.New(breaker.Config{FailureThreshold: 1, DisableJitter: true, MinCallers: 1})
	mux := http.NewServeMux()
	mux.Handle("GET /report", b.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "database unavailable", http.StatusInternalServerError)
	})))

	for range 2 {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/report", nil))
		fmt.Printf("%d %s [%s]\n", rec.Code, rec.Header().Get("Content-Type"), rec.Header().Get("Retry-After"))
	}
	fmt.Println(b.State("GET /report"))
	// Output:
	// 500 text/plain; charset=utf-8 []
	// 503 application/problem+json [30]
	// open
}

func ExampleConfig_fallback() {
	b := breaker.New(breaker.Config{
		FailureThreshold: 1,
		Cached: func(r *http.Request) (*http.Response, bool) {
			if r.URL.Path != "/prices" {
				return nil, false
			}
			return &http.Response{
				StatusCode: http.StatusOK,
				Header:     http.Header{"Age": {"300"}},
				Body:       io.NopCloser(strings.NewReader(`{"eur":1.08}`)),
			}, true
		},
		Fallback: &breaker.Document{ContentType: "application/json", Body: []byte(`{"items":[]}`)},
	})
	rt := b.Transport(roundTripFunc(func(*http.Request) (*http.Response, error) {
		return nil, errors.New("connection refused")
	}))

	for _, path := range []string{"/prices", "/prices", "/news"} {
		req, _ := http.NewRequest(http.MethodGet, "http://api.example"+path, nil)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			fmt.Println("error:", err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode, resp.Header.Get("Holdfast-Degraded"), string(body))
	}
	// Output:
	// error: connection refused
	// 200 circuit-open {"eur":1.08}
	// 200 circuit-open {"items":[]}
}

func ExampleConfig_onStateChange() {
	b := breaker.New(breaker.Config{
		FailureThreshold: 2,
		OnStateChange: func(c breaker.StateChange) {
			fmt.Printf("%s: %s -> %s\n", c.Key, c.From, c.To)
		},
	})
	rt := b.Transport(roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: http.StatusServiceUnavailable, Body: http.NoBody}, nil
	}))
	for range 2 {
		req, _ := http.NewRequest(http.MethodGet, "http://payments.example/charge", nil)
		resp, _ := rt.RoundTrip(req)
		resp.Body.Close()
	}
	for _, s := range b.Snapshot() {
		fmt.Println(s.Key, s.State, s.Failures)
	}
	// Output:
	// payments.example: closed -> open
	// payments.example open 2
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
