package fault_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"

	"github.com/holdfast-go/holdfast/fault"
)

// A client's calls to a dependency fail as they would in an outage, then
// recover when the fault is cleared.
func ExampleInjector_Transport() {
	payments := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "paid")
	}))
	defer payments.Close()

	in := fault.New(fault.Config{})
	client := &http.Client{Transport: in.Transport("payments", nil)}

	_ = in.Set("payments", fault.Fault{Kind: fault.Outage})
	_, err := client.Get(payments.URL)
	fmt.Println("outage:", errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, fault.ErrInjected))

	_ = in.Set("payments", fault.Fault{Kind: fault.Status, Status: 503})
	resp, _ := client.Get(payments.URL)
	resp.Body.Close()
	fmt.Println("status:", resp.StatusCode)

	in.Clear("payments")
	resp, _ = client.Get(payments.URL)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println("cleared:", string(b))
	// Output:
	// outage: true true
	// status: 503
	// cleared: paid
}

// A fault in front of a server, switched over HTTP through the admin
// handler (which belongs on an internal, authenticated listener).
func ExampleInjector_AdminHandler() {
	in := fault.New(fault.Config{})
	idp := httptest.NewServer(in.Handler("idp", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"keys":[]}`)
	})))
	defer idp.Close()
	admin := httptest.NewServer(in.AdminHandler())
	defer admin.Close()

	resp, _ := http.Post(admin.URL, "application/json", strings.NewReader(`{"dependency":"idp","kind":"status","status":502}`))
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(string(b))

	resp, _ = http.Get(idp.URL)
	resp.Body.Close()
	fmt.Println("idp answers", resp.StatusCode)
	// Output:
	// {"faults":{"idp":{"kind":"status","status":502}}}
	// idp answers 502
}
