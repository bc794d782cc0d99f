package stack

import (
	"io"
	"net/http"
	"net/http/httptest"
	"path"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Issue 14 point 6: the item id is escaped on its way downstream, so a
// caller can neither add a query to the downstream call nor reach another
// downstream path; an oversized order is answered 413.
func TestAppEscapesForwardedPath(t *testing.T) {
	var mu sync.Mutex
	var seen []string // RequestURI of every downstream call
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.RequestURI)
		mu.Unlock()
		p := path.Clean(r.URL.Path) // as a router would, before it routes
		if p == "/items/7" {
			_, _ = io.WriteString(w, `{"id":"7","secret":"only for /items/7"}`)
			return
		}
		if strings.HasPrefix(p, "/ledger") {
			_, _ = io.WriteString(w, `{"ledger":"everything"}`)
			return
		}
		http.NotFound(w, r)
	}))
	defer down.Close()
	app := httptest.NewServer(&App{Client: down.Client(), Downstream: down.URL})
	defer app.Close()

	get := func(rawPath string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, app.URL, nil)
		require.NoError(t, err)
		req.URL.Opaque = rawPath // sent as is, escapes and all
		resp, err := app.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/items/7")
	require.Equal(t, 200, code)
	require.Contains(t, body, "only for /items/7")

	for _, p := range []string{"/items/7%3Fx=1", "/items/7%23frag", "/items/..%2fledger", "/items/..%2Fledger", "/items/%2e%2e", "/items/7%2f..%2f..%2fledger"} {
		code, body = get(p)
		assert.NotEqual(t, 200, code, p)
		assert.NotContains(t, body, "only for /items/7", "%s must not read item 7", p)
		assert.NotContains(t, body, "everything", "%s must not reach the ledger", p)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, uri := range seen {
		assert.True(t, strings.HasPrefix(uri, "/items/"), "downstream call %q left /items/", uri)
		assert.NotContains(t, uri, "?", "downstream call %q carries a query", uri)
	}
	assert.Contains(t, seen, "/items/7%3Fx=1", "the id travels escaped")
}

func TestAppOversizedOrderIs413(t *testing.T) {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
	}))
	defer down.Close()
	app := httptest.NewServer(&App{Client: down.Client(), Downstream: down.URL})
	defer app.Close()
	big := `{"write_id":"w1","pad":"` + strings.Repeat("x", MaxOrderBytes) + `"}`
	resp, err := app.Client().Post(app.URL+"/orders", "application/json", strings.NewReader(big))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)

	resp, err = app.Client().Post(app.URL+"/orders", "application/json", strings.NewReader(`{"write_id":"w1"}`))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusCreated, resp.StatusCode)
}
