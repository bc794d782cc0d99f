package idempotency

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseKey(t *testing.T) {
	long := strings.Repeat("k", MaxKeyLength)
	for _, tc := range []struct {
		name   string
		values []string
		want   string
		err    error
	}{
		{"sf-string", []string{`"8e03978e-40d5-43e8-bc93-6894a57f9324"`}, "8e03978e-40d5-43e8-bc93-6894a57f9324", nil},
		{"unquoted", []string{`8e03978e-40d5`}, "8e03978e-40d5", nil},
		{"spaces around", []string{" \t\"abc\" "}, "abc", nil},
		{"escapes", []string{`"a\"b\\c"`}, `a"b\c`, nil},
		{"space and comma inside quotes", []string{`"a b,c;d"`}, "a b,c;d", nil},
		{"base64 unquoted", []string{"q+/Zz09="}, "q+/Zz09=", nil},
		{"max length quoted", []string{`"` + long + `"`}, long, nil},
		{"max length unquoted", []string{long}, long, nil},
		{"none", nil, "", errKeyEmpty},
		{"empty", []string{""}, "", errKeyEmpty},
		{"empty string", []string{`""`}, "", errKeyEmpty},
		{"two lines", []string{`"a"`, `"b"`}, "", errKeyMultiple},
		{"too long quoted", []string{`"` + long + `k"`}, "", errKeyTooLong},
		{"too long unquoted", []string{long + "k"}, "", errKeyTooLong},
		{"list", []string{`"a", "b"`}, "", errKeySyntax},
		{"unquoted list", []string{`a,b`}, "", errKeySyntax},
		{"parameters", []string{`"a";x=1`}, "", errKeySyntax},
		{"unterminated", []string{`"abc`}, "", errKeySyntax},
		{"bad escape", []string{`"a\nb"`}, "", errKeySyntax},
		{"escape at end", []string{`"a\`}, "", errKeySyntax},
		{"control char", []string{"\"a\x01b\""}, "", errKeySyntax},
		{"non-ascii", []string{`"clé"`}, "", errKeySyntax},
		{"unquoted space", []string{"a b"}, "", errKeySyntax},
		{"unquoted quote", []string{`a"b`}, "", errKeySyntax},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseKey(tc.values)
			if tc.err != nil {
				assert.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestFormatKeyRoundTrip(t *testing.T) {
	for _, k := range []string{"abc", `a"b\c`, "a b,c"} {
		got, err := parseKey([]string{formatKey(k)})
		require.NoError(t, err)
		assert.Equal(t, k, got)
	}
}

func FuzzParseKey(f *testing.F) {
	for _, s := range []string{`"abc"`, `abc`, `"a\"b"`, `""`, `"a";p`, " \"x\" ", `"\`, "\"\x7f\""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		key, err := parseKey([]string{v})
		if err != nil {
			return
		}
		if key == "" || len(key) > MaxKeyLength {
			t.Fatalf("parseKey(%q) = %q: empty or too long", v, key)
		}
		for i := 0; i < len(key); i++ {
			if key[i] < 0x20 || key[i] > 0x7e {
				t.Fatalf("parseKey(%q) = %q: control or non-ASCII byte", v, key)
			}
		}
		back, err := parseKey([]string{formatKey(key)})
		if err != nil || back != key {
			t.Fatalf("round trip of %q: %q, %v", key, back, err)
		}
	})
}
