// Package overridetest is the conformance suite of degrade.OverrideStore:
// every implementation (memory, Redis, PostgreSQL) passes [Run].
package overridetest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/degrade"
)

// Run runs the suite. newStore returns an empty store of its own for each
// subtest (and cleans it up with t.Cleanup); two calls to open on the same
// t return handles on the same shared store when the implementation is
// shared (a second replica), or nil when it is not.
func Run(t *testing.T, newStore func(t *testing.T) (degrade.OverrideStore, func() degrade.OverrideStore)) {
	ctx := context.Background()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	t.Run("Empty", func(t *testing.T) {
		s, _ := newStore(t)
		o, err := s.Overrides(ctx)
		require.NoError(t, err)
		assert.Nil(t, o.Mode)
		assert.Empty(t, o.Dependencies)
	})

	t.Run("Mode", func(t *testing.T) {
		s, _ := newStore(t)
		require.NoError(t, s.SetMode(ctx, &degrade.ModeOverride{Mode: degrade.ReadOnly, Reason: "IdP incident 4711", At: at}))
		o, err := s.Overrides(ctx)
		require.NoError(t, err)
		require.NotNil(t, o.Mode)
		assert.Equal(t, degrade.ReadOnly, o.Mode.Mode)
		assert.Equal(t, "IdP incident 4711", o.Mode.Reason)
		assert.True(t, at.Equal(o.Mode.At), "%v != %v", o.Mode.At, at)

		require.NoError(t, s.SetMode(ctx, &degrade.ModeOverride{Mode: degrade.Normal, At: at}))
		o, err = s.Overrides(ctx)
		require.NoError(t, err)
		require.NotNil(t, o.Mode, "forcing Normal is an override too")
		assert.Equal(t, degrade.Normal, o.Mode.Mode)

		require.NoError(t, s.SetMode(ctx, nil))
		o, err = s.Overrides(ctx)
		require.NoError(t, err)
		assert.Nil(t, o.Mode)
		require.NoError(t, s.SetMode(ctx, nil), "releasing twice is fine")
	})

	t.Run("Dependencies", func(t *testing.T) {
		s, _ := newStore(t)
		require.NoError(t, s.SetDependency(ctx, "payments", &degrade.DependencyOverride{Down: true, Reason: "disable payments", At: at}))
		require.NoError(t, s.SetDependency(ctx, "idp", &degrade.DependencyOverride{Down: false, At: at}))
		require.NoError(t, s.SetDependency(ctx, "weird name: ünïcode/with:colons", &degrade.DependencyOverride{Down: true, At: at}))
		o, err := s.Overrides(ctx)
		require.NoError(t, err)
		require.Len(t, o.Dependencies, 3)
		assert.True(t, o.Dependencies["payments"].Down)
		assert.Equal(t, "disable payments", o.Dependencies["payments"].Reason)
		assert.False(t, o.Dependencies["idp"].Down)
		assert.True(t, o.Dependencies["weird name: ünïcode/with:colons"].Down)
		assert.Nil(t, o.Mode, "dependencies do not set the mode")

		o.Dependencies["payments"] = degrade.DependencyOverride{}
		o2, err := s.Overrides(ctx)
		require.NoError(t, err)
		assert.True(t, o2.Dependencies["payments"].Down, "the returned map is the caller's")

		require.NoError(t, s.SetDependency(ctx, "payments", &degrade.DependencyOverride{Down: false, Reason: "back", At: at}))
		require.NoError(t, s.SetDependency(ctx, "idp", nil))
		require.NoError(t, s.SetDependency(ctx, "never-set", nil))
		o, err = s.Overrides(ctx)
		require.NoError(t, err)
		assert.Len(t, o.Dependencies, 2)
		assert.False(t, o.Dependencies["payments"].Down)
		_, ok := o.Dependencies["idp"]
		assert.False(t, ok)
	})

	t.Run("Shared", func(t *testing.T) {
		s, open := newStore(t)
		other := open()
		if other == nil {
			t.Skip("not a shared store")
		}
		require.NoError(t, s.SetMode(ctx, &degrade.ModeOverride{Mode: degrade.Degraded, Reason: "drill", At: at}))
		require.NoError(t, other.SetDependency(ctx, "payments", &degrade.DependencyOverride{Down: true, At: at}))
		for _, st := range []degrade.OverrideStore{s, other} {
			o, err := st.Overrides(ctx)
			require.NoError(t, err)
			require.NotNil(t, o.Mode)
			assert.Equal(t, degrade.Degraded, o.Mode.Mode)
			assert.True(t, o.Dependencies["payments"].Down)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		s, _ := newStore(t)
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := fmt.Sprintf("dep%d", i)
				assert.NoError(t, s.SetDependency(ctx, name, &degrade.DependencyOverride{Down: true, At: at}))
				_, err := s.Overrides(ctx)
				assert.NoError(t, err)
			}()
		}
		wg.Wait()
		o, err := s.Overrides(ctx)
		require.NoError(t, err)
		assert.Len(t, o.Dependencies, 8)
	})

	t.Run("CanceledContext", func(t *testing.T) {
		s, _ := newStore(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		assert.Error(t, s.SetMode(cctx, &degrade.ModeOverride{Mode: degrade.ReadOnly, At: at}))
		o, err := s.Overrides(ctx)
		require.NoError(t, err)
		assert.Nil(t, o.Mode, "a write with a cancelled context does not happen")
	})
}

// Fleet runs two replicas, Controllers that share an override store
// through the handles a and b, over real HTTP: an operator acts on the
// first replica's admin handler and the second follows within a second
// (each polls every 50 ms), for the mode and for a dependency switch.
func Fleet(t *testing.T, a, b degrade.OverrideStore) {
	quiet := slog.New(slog.DiscardHandler)
	mk := func(s degrade.OverrideStore) *degrade.Controller {
		return degrade.New(degrade.Config{Dependencies: map[string]degrade.Mode{"payments": degrade.Degraded}, Overrides: s,
			OverridePoll: 50 * time.Millisecond, AuditLog: quiet})
	}
	r1, r2 := mk(a), mk(b)
	defer r1.Close()
	defer r2.Close()
	admin := httptest.NewServer(r1.AdminHandler())
	defer admin.Close()
	api2 := httptest.NewServer(r2.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
	defer api2.Close()
	do := func(method, body string) int {
		t.Helper()
		req, err := http.NewRequest(method, admin.URL, strings.NewReader(body))
		require.NoError(t, err)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	within := func(cond func() bool, msg string) {
		t.Helper()
		start := time.Now()
		assert.Eventually(t, cond, time.Second, 5*time.Millisecond, msg)
		t.Logf("%s: %v", msg, time.Since(start).Round(time.Millisecond))
	}

	require.Equal(t, 200, do(http.MethodPut, `{"mode":"read-only","reason":"IdP incident"}`))
	assert.Equal(t, degrade.ReadOnly, r1.Mode(), "the replica the operator used switches at once")
	within(func() bool { return r2.Mode() == degrade.ReadOnly }, "replica 2 read-only")
	resp, err := http.Post(api2.URL, "application/json", strings.NewReader("{}"))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 503, resp.StatusCode, "replica 2 refuses writes")
	assert.Equal(t, "IdP incident", r2.Status().Reason)
	assert.True(t, r2.Status().Forced)

	require.Equal(t, 200, do(http.MethodDelete, ""))
	within(func() bool { return r2.Mode() == degrade.Normal }, "replica 2 released")

	require.Equal(t, 200, do(http.MethodPut, `{"dependency":"payments","state":"down","reason":"disable payments"}`))
	within(func() bool { return r2.Mode() == degrade.Degraded }, "replica 2 payments down")
	assert.Equal(t, "down", r2.Status().Dependencies["payments"].Forced)
	r2.ReleaseDependency("payments") // from the other replica, through its API
	within(func() bool { return r1.Mode() == degrade.Normal }, "replica 1 payments released")
}
