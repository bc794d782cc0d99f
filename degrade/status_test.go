package degrade

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStatusHandlerJSON(t *testing.T) {
	c := New(Config{
		Dependencies: map[string]Mode{"idp": ReadOnly, "payments": Degraded},
		MinReports:   4,
		StatusCode: func(m Mode) int {
			if m == ReadOnly {
				return http.StatusServiceUnavailable
			}
			return http.StatusOK
		},
	})
	defer c.Close()
	c.Register("breaker", func() any { return map[string]string{"payments": "open"} })
	c.Register("jwks", func() any { return map[string]any{"key_age_seconds": 42} })
	c.Register("gone", func() any { return 1 })
	c.Register("gone", nil)

	srv := httptest.NewServer(c.StatusHandler())
	defer srv.Close()
	get := func() (*http.Response, map[string]any) {
		resp, err := srv.Client().Get(srv.URL)
		require.NoError(t, err)
		defer resp.Body.Close()
		var m map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
		return resp, m
	}

	resp, m := get()
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	assert.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	assert.Equal(t, "normal", m["mode"])
	deps := m["dependencies"].(map[string]any)
	require.Contains(t, deps, "idp", "configured dependencies show before any report")
	assert.Equal(t, false, deps["idp"].(map[string]any)["down"])

	c.Report("payments", nil)
	c.Report("payments", errBoom)
	c.Report("payments", errBoom)
	c.Report("payments", nil)
	c.SetDown("idp", true, "jwks fallback")

	resp, m = get()
	assert.Equal(t, 503, resp.StatusCode, "configured status for read-only")
	assert.Equal(t, "read-only", m["mode"])
	assert.Equal(t, "idp: jwks fallback", m["reason"])
	assert.Equal(t, false, m["forced"])
	_, err := time.Parse(time.RFC3339Nano, m["since"].(string))
	assert.NoError(t, err)
	deps = m["dependencies"].(map[string]any)
	pay := deps["payments"].(map[string]any)
	assert.Equal(t, true, pay["down"])
	assert.Equal(t, 0.5, pay["error_rate"])
	assert.Equal(t, float64(4), pay["reports"])
	assert.Equal(t, float64(2), pay["failures"])
	assert.Equal(t, "degraded", pay["causes"])
	assert.Equal(t, "payments: 2 of 4 calls failed", pay["reason"])
	idp := deps["idp"].(map[string]any)
	assert.Equal(t, true, idp["down"])
	assert.Equal(t, "read-only", idp["causes"])
	tim := m["time_in_mode_seconds"].(map[string]any)
	assert.Contains(t, tim, "normal")
	assert.Contains(t, tim, "read-only")
	comp := m["components"].(map[string]any)
	assert.Equal(t, map[string]any{"payments": "open"}, comp["breaker"])
	assert.Equal(t, float64(42), comp["jwks"].(map[string]any)["key_age_seconds"])
	assert.NotContains(t, comp, "gone")

	// HEAD: status code, no body.
	req, _ := http.NewRequest(http.MethodHead, srv.URL, nil)
	hresp, err := srv.Client().Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(hresp.Body)
	hresp.Body.Close()
	assert.Equal(t, 503, hresp.StatusCode)
	assert.Empty(t, b)
}

func TestStatusDefaultCodeAndBadComponent(t *testing.T) {
	c := New(Config{})
	defer c.Close()
	c.Force(ReadOnly, "x")
	c.Register("bad", func() any { return func() {} })
	rec := httptest.NewRecorder()
	c.StatusHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	assert.Equal(t, 200, rec.Code, "default: 200 in every mode")
	var m map[string]any
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &m))
	assert.Equal(t, "read-only", m["mode"])
	assert.Equal(t, true, m["forced"])
	assert.Contains(t, m["components"], "error")
}

func TestStatusTimeInMode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(Config{})
		defer c.Close()
		time.Sleep(10 * time.Second)
		c.Force(Degraded, "a")
		time.Sleep(20 * time.Second)
		c.Force(ReadOnly, "b")
		time.Sleep(5 * time.Second)
		c.Force(Degraded, "c")
		time.Sleep(1 * time.Second)
		st := c.Status()
		assert.Equal(t, 10.0, st.TimeInMode[Normal])
		assert.Equal(t, 21.0, st.TimeInMode[Degraded])
		assert.Equal(t, 5.0, st.TimeInMode[ReadOnly])
		assert.Equal(t, time.Now().Add(-time.Second), st.Since)
	})
}
