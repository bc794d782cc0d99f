package degrade_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/degrade"
)

func TestRecoveredEndsRateOutageAtOnce(t *testing.T) {
	c := degrade.New(degrade.Config{Window: time.Minute, MinReports: 3})
	defer c.Close()
	for range 10 {
		c.Report("payments", errors.New("down"))
	}
	require.Equal(t, degrade.Degraded, c.Mode())
	c.Report("payments", nil)
	assert.Equal(t, degrade.Degraded, c.Mode(), "one success does not dilute ten failures")
	c.Recovered("payments")
	assert.Equal(t, degrade.Normal, c.Mode(), "a recovery signal ends the outage without waiting for the window")
	for range 10 {
		c.Report("payments", errors.New("down again"))
	}
	assert.Equal(t, degrade.Degraded, c.Mode(), "new failures count as usual")

	c.SetDown("idp", true, "breaker open")
	c.Recovered("idp")
	assert.Equal(t, degrade.Degraded, c.Mode(), "SetDown wins")
	c.Recovered("unknown") // ignored
}

func TestReportTransport(t *testing.T) {
	var status atomic.Int64
	status.Store(200)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	c := degrade.New(degrade.Config{Window: time.Minute, MinReports: 3})
	defer c.Close()
	cl := &http.Client{Transport: &degrade.ReportTransport{Controller: c, Dependency: "downstream"}}
	get := func() {
		resp, err := cl.Get(srv.URL)
		require.NoError(t, err)
		resp.Body.Close()
	}
	get()
	assert.Equal(t, degrade.Normal, c.Mode())
	status.Store(503)
	for range 3 {
		get()
	}
	assert.Equal(t, degrade.Degraded, c.Mode(), "5xx counts as failure")
	_, err := (&http.Client{Transport: &degrade.ReportTransport{Controller: c, Dependency: "gone"}}).Get("http://127.0.0.1:1/")
	assert.Error(t, err)
}
