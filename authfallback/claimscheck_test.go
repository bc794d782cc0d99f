package authfallback

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
)

// refDuplicate is the reference: encoding/json's tokenizer over a valid
// object, names unescaped.
func refDuplicate(b []byte) (dup, ok bool) {
	if !json.Valid(b) {
		return false, false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return false, false
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return false, false
		}
		name := t.(string)
		if seen[name] {
			return true, true
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return false, false
		}
	}
	return false, true
}

func TestDuplicateMembers(t *testing.T) {
	for doc, want := range map[string]bool{
		`{"sub":"a","sub":"b"}`:                  true,
		`{"sub":"a","s\u0075b":"b"}`:             true,
		` { "a" : 1 , "b" : [1,{"a":2}], "a":3}`: true,
		`{"a":{"b":1,"b":2}}`:                    false,
		`{"a":"\"b\":1","b":1}`:                  false,
		`{}`:                                     false,
		`[1,2]`:                                  false,
		`{"a":1`:                                 false,
		`{"a":"x}","a":2}`:                       true,
		"{\"\xae\xae\":0,\"\xf5\xbf\":0}":        true, // both decode to "\ufffd\ufffd"
	} {
		assert.Equal(t, want, duplicateMembers([]byte(doc)), doc)
	}
}

// FuzzDuplicateMembers: on every valid JSON object the scanner agrees
// with encoding/json's tokenizer; on anything else it does not panic.
func FuzzDuplicateMembers(f *testing.F) {
	for _, s := range []string{`{"sub":"a","sub":"b"}`, `{"a":{"a":1}}`, `{"s\u0075b":1,"sub":2}`, `{"a":[1,"]"],"b":null}`, `{`, `"x"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := duplicateMembers(b)
		want, ok := refDuplicate(b)
		if ok && got != want {
			t.Fatalf("duplicateMembers(%q) = %v, want %v", b, got, want)
		}
	})
}
