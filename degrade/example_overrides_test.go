package degrade_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/holdfast-go/holdfast/degrade"
)

// An operator's kill switch for one integration, shared by two replicas
// through one store (here in memory; redisstore.NewOverrides and
// pgstore.NewOverrides share it between processes).
func ExampleController_ForceDependency() {
	store := degrade.NewMemoryOverrides()
	quiet := slog.New(slog.DiscardHandler)
	newReplica := func() *degrade.Controller {
		return degrade.New(degrade.Config{
			Dependencies: map[string]degrade.Mode{"payments": degrade.Degraded},
			Overrides:    store,
			AuditLog:     quiet, // in production: the audit trail
		})
	}
	r1, r2 := newReplica(), newReplica()
	defer r1.Close()
	defer r2.Close()

	r1.ForceDependency("payments", true, "PSP incident 4711")
	o, _ := store.Overrides(context.Background())
	fmt.Println(r1.Mode(), o.Dependencies["payments"].Down, o.Dependencies["payments"].Reason)
	// Output:
	// degraded true PSP incident 4711
}

// Shedding by tier: with MaxConcurrent, a saturated service sheds reads
// first (from the stale cache when it can), then writes, and keeps room for
// critical requests.
func ExampleConfig_maxConcurrent() {
	stale := &degrade.Stale{}
	c := degrade.New(degrade.Config{
		MaxConcurrent: 100,
		Stale:         stale,
		Tier: func(r *http.Request) degrade.Tier {
			if strings.HasPrefix(r.URL.Path, "/payments") {
				return degrade.Critical
			}
			return degrade.DefaultTier(r)
		},
		OnGate: func(ev degrade.GateEvent) {
			if ev.Decision == degrade.DecisionShed {
				fmt.Println("shed", ev.Tier) // a metric, in production
			}
		},
	})
	defer c.Close()
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	h := c.Handler(stale.Handler(api))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/payments", nil))
	fmt.Print(rec.Code, " ", rec.Body.String())
	// Output:
	// 200 ok
}
