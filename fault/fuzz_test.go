package fault_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/holdfast-go/holdfast/fault"
)

// FuzzParseAdminRequest: the admin handler's parser never panics, accepts
// only valid faults, and what it accepts survives a round trip through the
// JSON form the handler lists.
func FuzzParseAdminRequest(f *testing.F) {
	for _, s := range []string{
		`{"dependency":"idp","kind":"outage"}`,
		`{"dependency":"payments","kind":"hang","rate":0.5,"latency":"200ms","max_hang":"30s","methods":["POST"]}`,
		`{"dependency":"x","kind":"status","status":429,"retry_after":"1s"}`,
		`{"dependency":"x","kind":"latency","latency":"-1s"}`,
		`{"dependency":"x","kind":"status","rate":1e309}`,
		`{}`, `[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := fault.ParseAdminRequest(body)
		if err != nil {
			return
		}
		if err := req.Fault.Validate(); err != nil {
			t.Fatalf("accepted an invalid fault %+v: %v", req.Fault, err)
		}
		if err := fault.New(fault.Config{}).Set(req.Dependency, req.Fault); err != nil {
			t.Fatalf("accepted what Set refuses: %v", err)
		}
		b, err := json.Marshal(req.Fault)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		m["dependency"] = req.Dependency
		b, _ = json.Marshal(m)
		again, err := fault.ParseAdminRequest(b)
		if err != nil {
			t.Fatalf("round trip of %s: %v", b, err)
		}
		if len(again.Fault.Methods) == 0 && len(req.Fault.Methods) == 0 {
			again.Fault.Methods, req.Fault.Methods = nil, nil
		}
		if !reflect.DeepEqual(again, req) {
			t.Fatalf("round trip changed %+v into %+v", req, again)
		}
	})
}
