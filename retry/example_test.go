package retry_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/holdfast-go/holdfast/breaker"
	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/retry"
)

// flaky returns a server that answers 503 to the first n requests.
func flaky(n int64) *httptest.Server {
	var hits atomic.Int64
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) <= n {
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "hello")
	}))
}

func ExampleTransport() {
	srv := flaky(2)
	defer srv.Close()

	client := &http.Client{Transport: &retry.Transport{
		Base:      http.DefaultTransport, // in a full stack: a breaker's Transport
		BaseDelay: time.Millisecond,      // short for the example; the default is 100 ms
		OnRetry: func(ev retry.RetryEvent) {
			fmt.Printf("attempt %d after status %d\n", ev.Attempt, ev.StatusCode)
		},
	}}
	resp, err := client.Get(srv.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
	// Output:
	// attempt 2 after status 503
	// attempt 3 after status 503
	// 200 hello
}

// A POST is retried only if it carries an Idempotency-Key (which
// idempotency.Transport adds); otherwise the hook says why not.
func ExampleTransport_onGiveUp() {
	srv := flaky(1)
	defer srv.Close()

	client := &http.Client{Transport: &retry.Transport{
		BaseDelay: time.Millisecond,
		OnGiveUp: func(ev retry.GiveUpEvent) {
			var nr *retry.NotReplayableError
			if errors.As(ev.Reason, &nr) {
				fmt.Println("not retried:", nr.Reason)
			}
		},
	}}

	resp, err := client.Post(srv.URL, "application/json", strings.NewReader(`{"amount":10}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	fmt.Println("without key:", resp.StatusCode)

	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(`{"amount":10}`))
	req.Header.Set("Idempotency-Key", "0b5f4f0e-4a3c-4c1e-9d0a-7f1f6f2f8e11")
	resp, err = client.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	fmt.Println("with key:", resp.StatusCode)
	// Output:
	// not retried: method without Idempotency-Key
	// without key: 503
	// with key: 200
}

// Transports that reach the same upstream share one budget, so that
// together they never retry more than 20 % of their requests (plus a few
// per second).
func ExampleNewBudget() {
	srv := flaky(1 << 30) // a total outage
	defer srv.Close()

	budget := retry.NewBudget(0.2, 0, 10*time.Second)
	var refused atomic.Int64
	newClient := func() *http.Client {
		return &http.Client{Transport: &retry.Transport{
			Budget:    budget,
			BaseDelay: time.Millisecond,
			OnGiveUp: func(ev retry.GiveUpEvent) {
				if errors.Is(ev.Reason, retry.ErrBudgetExhausted) {
					refused.Add(1)
				}
			},
		}}
	}
	a, b := newClient(), newClient()
	for i := 0; i < 10; i++ {
		for _, c := range []*http.Client{a, b} {
			resp, err := c.Get(srv.URL)
			if err != nil {
				fmt.Println(err)
				return
			}
			resp.Body.Close()
		}
	}
	fmt.Println("requests refused a retry by the budget:", refused.Load() > 0)
	// Output:
	// requests refused a retry by the budget: true
}

// The client stack of a resilient service, outermost first: idempotency
// keys, then retries, then a per-host breaker. The key is added once, so
// every attempt carries the same one; an open breaker fails fast and is not
// retried.
func ExampleTransport_wiring() {
	var mu sync.Mutex
	var keys []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		n := len(keys)
		mu.Unlock()
		if n == 1 {
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()

	brk := breaker.New(breaker.Config{})
	client := &http.Client{Transport: &idempotency.Transport{
		Base: &retry.Transport{
			Base:      brk.Transport(http.DefaultTransport),
			BaseDelay: time.Millisecond,
		},
	}}
	resp, err := client.Post(srv.URL, "application/json", strings.NewReader(`{"amount":10}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode, "after", len(keys), "attempts; same key:", keys[0] != "" && keys[0] == keys[1])

	// A breaker that is open: the retry transport does not retry its error.
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer down.Close()
	strict := breaker.New(breaker.Config{FailureThreshold: 1})
	var retries int
	client = &http.Client{Transport: &retry.Transport{
		Base:      strict.Transport(http.DefaultTransport),
		BaseDelay: time.Millisecond,
		OnRetry:   func(retry.RetryEvent) { retries++ },
	}}
	_, err = client.Get(down.URL)
	fmt.Println("open breaker:", errors.Is(err, breaker.ErrOpen), "retries:", retries)
	// Output:
	// 201 after 2 attempts; same key: true
	// open breaker: true retries: 1
}
