package degrade_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"

	"github.com/holdfast-go/holdfast/degrade"
)

// The gate in front of an API: reads pass in read-only mode, writes are
// refused with 503 and a problem document, unless a queue takes them.
func ExampleController_Handler() {
	c := degrade.New(degrade.Config{
		Dependencies: map[string]degrade.Mode{"idp": degrade.ReadOnly},
	})
	defer c.Close()
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})
	srv := httptest.NewServer(c.Handler(api))
	defer srv.Close()

	// authfallback's OnFallbackEnter would call this.
	c.SetDown("idp", true, "JWKS unreachable, verifying with cached keys")

	resp, _ := http.Get(srv.URL + "/orders")
	fmt.Println("GET ", resp.StatusCode, resp.Header.Get("Holdfast-Degraded"))
	resp.Body.Close()

	resp, _ = http.Post(srv.URL+"/orders", "application/json", strings.NewReader("{}"))
	var p struct{ Mode, Reason string }
	json.NewDecoder(resp.Body).Decode(&p)
	resp.Body.Close()
	fmt.Println("POST", resp.StatusCode, resp.Header.Get("Retry-After"), p.Mode, "-", p.Reason)
	// Output:
	// GET  200 read-only
	// POST 503 30 read-only - idp: JWKS unreachable, verifying with cached keys
}

// Failure reports move the mode; OnModeChange sees every change.
func ExampleController_Report() {
	c := degrade.New(degrade.Config{
		Dependencies: map[string]degrade.Mode{"payments": degrade.Degraded},
		OnModeChange: func(ch degrade.ModeChange) {
			fmt.Printf("%s -> %s (%s)\n", ch.From, ch.To, ch.Reason)
		},
	})
	defer c.Close()
	for i := range 10 {
		var err error
		if i%4 == 0 {
			err = errors.New("payments: 502")
		}
		c.Report("payments", err) // 3 of 10 failed: 30 % >= 20 %
	}
	c.Force(degrade.Normal, "on-call accepts the risk")
	c.Release()
	// Output:
	// normal -> degraded (payments: 3 of 10 calls failed)
	// degraded -> normal (on-call accepts the risk)
	// normal -> degraded (payments: 3 of 10 calls failed)
}

// A client keeps working on the last good response while its upstream
// fails.
func ExampleStale_Transport() {
	var down atomic.Bool
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Cache-Control", "max-age=60, stale-if-error=3600")
		io.WriteString(w, `{"rates":{"EUR":1.08}}`)
	}))
	defer upstream.Close()

	stale := &degrade.Stale{}
	client := &http.Client{Transport: stale.Transport(nil)}
	show := func() {
		resp, err := client.Get(upstream.URL + "/rates")
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%d %s degraded=%q\n", resp.StatusCode, body, resp.Header.Get("Holdfast-Degraded"))
	}
	show()
	down.Store(true)
	show()
	// Output:
	// 200 {"rates":{"EUR":1.08}} degraded=""
	// 200 {"rates":{"EUR":1.08}} degraded="stale-if-error"
}

// The status document for a load balancer and for humans; components
// come from other packages through Register.
func ExampleController_StatusHandler() {
	c := degrade.New(degrade.Config{
		StatusCode: func(m degrade.Mode) int {
			if m == degrade.ReadOnly {
				return http.StatusServiceUnavailable
			}
			return http.StatusOK
		},
	})
	defer c.Close()
	c.Register("breaker", func() any { return map[string]string{"payments": "closed"} })
	c.Force(degrade.ReadOnly, "maintenance window")

	rec := httptest.NewRecorder()
	c.StatusHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	var s struct {
		Mode, Reason string
		Forced       bool
		Components   map[string]any
	}
	json.Unmarshal(rec.Body.Bytes(), &s)
	fmt.Println(rec.Code, s.Mode, s.Reason, s.Forced, s.Components["breaker"])
	// Output:
	// 503 read-only maintenance window true map[payments:closed]
}

// A probe reports a canary URL into the controller.
func ExampleProbe() {
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer jwks.Close()
	c := degrade.New(degrade.Config{
		MinReports:   1,
		Dependencies: map[string]degrade.Mode{"idp": degrade.ReadOnly},
	})
	defer c.Close()
	done := make(chan struct{}, 1)
	p := &degrade.Probe{
		Targets: []degrade.Target{{Dependency: "idp", URL: jwks.URL + "/jwks.json"}},
		Report: func(dep string, err error) {
			c.Report(dep, err)
			select {
			case done <- struct{}{}:
			default:
			}
		},
	}
	p.Start()
	<-done
	p.Close()
	fmt.Println(c.Mode())
	// Output:
	// read-only
}
