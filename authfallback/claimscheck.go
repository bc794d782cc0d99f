package authfallback

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
	"unsafe"
)

var (
	errDuplicateMember = errors.New("duplicate member name in the token header or claims")
	errClaimType       = errors.New("claim is not a string")
)

// checkStringClaims refuses a token whose "sub", "iss" or "jti" is present
// but not a string: a numeric "sub" would read as an empty Subject, which no
// revocation by subject can match.
func checkStringClaims(claims map[string]any) error {
	for _, name := range [...]string{"sub", "iss", "jti"} {
		if x, ok := claims[name]; ok {
			if _, isStr := x.(string); !isStr {
				return fmt.Errorf("%w: %q", errClaimType, name)
			}
		}
	}
	return nil
}

// maxMemberScan bounds the decoded size of a segment checkTokenMembers
// decodes on the stack; larger segments (up to MaxTokenSize) go to the heap.
const maxMemberScan = 2048

// checkTokenMembers refuses a compact JWS whose header or claims object
// names a member twice ("sub":"a","sub":"admin"): encoding/json keeps the
// last, another parser may keep the first. Names are compared after
// unescaping. Malformed input is left to the JWT parser.
func checkTokenMembers(raw string) error {
	i := strings.IndexByte(raw, '.')
	if i < 0 {
		return nil
	}
	j := strings.IndexByte(raw[i+1:], '.')
	if j < 0 {
		return nil
	}
	for _, seg := range [2]string{raw[:i], raw[i+1 : i+1+j]} {
		if duplicateSegment(seg) {
			return errDuplicateMember
		}
	}
	return nil
}

func duplicateSegment(seg string) bool {
	src := unsafe.Slice(unsafe.StringData(seg), len(seg))
	n := base64.RawURLEncoding.DecodedLen(len(src))
	var buf [maxMemberScan]byte
	var dst []byte
	if n <= len(buf) {
		dst = buf[:n]
	} else {
		dst = make([]byte, n)
	}
	m, err := base64.RawURLEncoding.Decode(dst, src)
	if err != nil {
		return false
	}
	return duplicateMembers(dst[:m])
}

// duplicateMembers reports whether the top-level JSON object in b has two
// members of the same name. Input that is not a well-formed object reports
// false (the JSON decoder refuses it later). Names are kept as offsets, so
// b does not escape; a name with an escape sequence sends the whole object
// to encoding/json's tokenizer, which unescapes (rare: attacks mostly).
func duplicateMembers(b []byte) bool {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i++
	var small [16][2]int
	names := small[:0]
	for {
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != '"' {
			return false // '}' (end) or malformed
		}
		end, escaped := scanString(b, i)
		if end < 0 {
			return false
		}
		name := b[i+1 : end-1]
		if escaped || !utf8.Valid(name) {
			// Escapes, and invalid UTF-8 (which encoding/json decodes to
			// U+FFFD, so that two different raw names can be one member):
			// compare the names as the claims decoder will see them.
			return duplicateMembersSlow(b)
		}
		for _, x := range names {
			if bytes.Equal(b[x[0]:x[1]], name) {
				return true
			}
		}
		names = append(names, [2]int{i + 1, end - 1})
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipValue(b, skipSpace(b, i+1))
		if i < 0 {
			return false
		}
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != ',' {
			return false // '}' (end) or malformed
		}
		i++
	}
}

// duplicateMembersSlow is duplicateMembers with encoding/json's tokenizer.
func duplicateMembersSlow(b []byte) bool {
	// A copy, so that b (a stack buffer of the caller) does not escape.
	dec := json.NewDecoder(bytes.NewReader(bytes.Clone(b)))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return false
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return false
		}
		name, _ := t.(string)
		if seen[name] {
			return true
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return false
		}
	}
	return false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString returns the index after the string starting at b[i] == '"',
// or -1, and whether it contains an escape.
func scanString(b []byte, i int) (int, bool) {
	escaped := false
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			escaped = true
			j++
		case '"':
			return j + 1, escaped
		}
	}
	return -1, escaped
}

// skipValue returns the index after the JSON value starting at b[i], or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		end, _ := scanString(b, i)
		return end
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, _ := scanString(b, j)
				if end < 0 {
					return -1
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	default:
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
			j++
		}
		if j == i {
			return -1
		}
		return j
	}
}
