package fault_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/fault"
)

func admin(t *testing.T, url, method, ctype, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAdminHandlerSwitchesFaultsOverHTTP(t *testing.T) {
	in := fault.New(fault.Config{})
	adm := httptest.NewServer(in.AdminHandler())
	defer adm.Close()
	d := newDependency(t, nil)
	c := freshClient(in.Transport("payments", nil))

	code, body := admin(t, adm.URL, http.MethodPut, "application/json",
		`{"dependency":"payments","kind":"status","status":503,"retry_after":"3s","latency":"10ms","methods":["POST"]}`)
	require.Equal(t, http.StatusOK, code, body)
	var got struct {
		Faults map[string]fault.Fault `json:"faults"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &got))
	assert.Equal(t, fault.Fault{Kind: fault.Status, Status: 503, RetryAfter: 3 * time.Second, Latency: 10 * time.Millisecond, Methods: []string{"POST"}}, got.Faults["payments"])

	resp, _, err := do(t, c, http.MethodPost, d.srv.URL, time.Second)
	require.NoError(t, err)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "3", resp.Header.Get("Retry-After"))

	code, _ = admin(t, adm.URL, http.MethodPost, "application/json", `{"dependency":"idp","kind":"outage"}`)
	require.Equal(t, http.StatusOK, code)
	code, body = admin(t, adm.URL, http.MethodGet, "", "")
	require.Equal(t, http.StatusOK, code)
	assert.JSONEq(t, `{"faults":{"idp":{"kind":"outage"},"payments":{"kind":"status","status":503,"retry_after":"3s","latency":"10ms","methods":["POST"]}}}`, body)

	code, _ = admin(t, adm.URL+"?dependency=payments", http.MethodDelete, "", "")
	require.Equal(t, http.StatusOK, code)
	resp, _, err = do(t, c, http.MethodPost, d.srv.URL, time.Second)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	_, ok := in.Fault("idp")
	assert.True(t, ok)

	code, body = admin(t, adm.URL, http.MethodDelete, "", "")
	require.Equal(t, http.StatusOK, code)
	assert.JSONEq(t, `{"faults":{}}`, body)
}

func TestAdminHandlerRefuses(t *testing.T) {
	in := fault.New(fault.Config{})
	adm := httptest.NewServer(in.AdminHandler())
	defer adm.Close()
	for _, tt := range []struct {
		name, method, ctype, body string
		code                      int
	}{
		{"form post", http.MethodPost, "application/x-www-form-urlencoded", "dependency=idp&kind=outage", http.StatusUnsupportedMediaType},
		{"no content type", http.MethodPut, "", `{"dependency":"idp","kind":"outage"}`, http.StatusUnsupportedMediaType},
		{"too large", http.MethodPut, "application/json", `{"dependency":"idp","kind":"outage","methods":["` + strings.Repeat("A", 5000) + `"]}`, http.StatusRequestEntityTooLarge},
		{"typo", http.MethodPut, "application/json", `{"dependency":"idp","kind":"status","rat":0.5}`, http.StatusBadRequest},
		{"unknown kind", http.MethodPut, "application/json", `{"dependency":"idp","kind":"flood"}`, http.StatusBadRequest},
		{"bad duration", http.MethodPut, "application/json", `{"dependency":"idp","kind":"latency","latency":"soon"}`, http.StatusBadRequest},
		{"no dependency", http.MethodPut, "application/json", `{"kind":"outage"}`, http.StatusBadRequest},
		{"two values", http.MethodPut, "application/json", `{"dependency":"idp","kind":"outage"} {}`, http.StatusBadRequest},
		{"method", http.MethodPatch, "application/json", `{}`, http.StatusMethodNotAllowed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, body := admin(t, adm.URL, tt.method, tt.ctype, tt.body)
			assert.Equal(t, tt.code, code, body)
		})
	}
	assert.Empty(t, in.Faults(), "no refused request set a fault")
}

func TestParseAdminRequestRoundTrip(t *testing.T) {
	req, err := fault.ParseAdminRequest([]byte(`{"dependency":"downstream","kind":"hang","rate":0.25,"max_hang":"1.5s"}`))
	require.NoError(t, err)
	assert.Equal(t, "downstream", req.Dependency)
	assert.Equal(t, fault.Fault{Kind: fault.Hang, Rate: 0.25, MaxHang: 1500 * time.Millisecond}, req.Fault)
	assert.Equal(t, "hang at 25 % (max 1.5s)", req.Fault.String())
}
