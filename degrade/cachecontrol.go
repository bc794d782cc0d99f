package degrade

import (
	"net/http"
	"strings"
)

// maxDelta is the largest delta-seconds value kept (RFC 9111 §1.2.2: a
// larger value is sent as 2147483648).
const maxDelta = 1 << 31

// cacheControl holds the Cache-Control directives that matter to a
// stale-if-error cache. Delta-seconds fields are -1 when absent.
type cacheControl struct {
	noStore, noCache, private, public bool
	mustRevalidate, proxyRevalidate   bool
	maxAge, sMaxAge, staleIfError     int64
}

// parseCacheControl parses the Cache-Control field lines of h (RFC 9111
// §5.2). Directive names are case-insensitive; values are tokens or quoted
// strings. A directive that appears more than once with different values,
// or a delta-seconds that does not parse, is read in the most restrictive
// way: max-age and s-maxage become 0, stale-if-error is dropped.
func parseCacheControl(lines []string) cacheControl {
	cc := cacheControl{maxAge: -1, sMaxAge: -1, staleIfError: -1}
	sieBad := false
	for _, line := range lines {
		for len(line) > 0 {
			var name, value string
			var hasValue bool
			name, value, hasValue, line = nextDirective(line)
			// Directives are almost always sent in lower case: match
			// them as they are first, and lower an unknown one only when
			// it has upper case in it.
			if !cc.apply(name, value, hasValue, &sieBad) {
				if low := strings.ToLower(name); low != name {
					cc.apply(low, value, hasValue, &sieBad)
				}
			}
		}
	}
	return cc
}

// apply records the directive name (lower case) in cc and reports whether
// it is one cc holds.
func (cc *cacheControl) apply(name, value string, hasValue bool, sieBad *bool) bool {
	switch name {
	case "no-store":
		cc.noStore = true
	case "no-cache":
		cc.noCache = true // a qualified no-cache="field" is read as unqualified
	case "private":
		cc.private = true // likewise private="field"
	case "public":
		cc.public = true
	case "must-revalidate":
		cc.mustRevalidate = true
	case "proxy-revalidate":
		cc.proxyRevalidate = true
	case "max-age":
		cc.maxAge = mergeDelta(cc.maxAge, value, hasValue, 0)
	case "s-maxage":
		cc.sMaxAge = mergeDelta(cc.sMaxAge, value, hasValue, 0)
	case "stale-if-error":
		d, ok := parseDelta(value, hasValue)
		switch {
		case !ok || *sieBad:
			*sieBad = true
			cc.staleIfError = -1
		case cc.staleIfError >= 0 && cc.staleIfError != d:
			*sieBad = true
			cc.staleIfError = -1
		default:
			cc.staleIfError = d
		}
	default:
		return false
	}
	return true
}

// mergeDelta combines a repeated delta-seconds directive: invalid or
// conflicting values give bad.
func mergeDelta(prev int64, value string, hasValue bool, bad int64) int64 {
	d, ok := parseDelta(value, hasValue)
	if !ok {
		return bad
	}
	if prev >= 0 && prev != d {
		return bad
	}
	return d
}

// parseDelta parses delta-seconds (1*DIGIT), capped at maxDelta. A quoted
// value is accepted (RFC 9111 §5.2 asks recipients to).
func parseDelta(v string, hasValue bool) (int64, bool) {
	if !hasValue || v == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if n < maxDelta {
			n = n*10 + int64(c-'0')
		}
	}
	if n > maxDelta {
		n = maxDelta
	}
	return n, true
}

// nextDirective splits the first directive off s. It never fails: junk is
// skipped up to the next comma outside a quoted string.
func nextDirective(s string) (name, value string, hasValue bool, rest string) {
	s = trimOWS(s)
	i := 0
	for i < len(s) && s[i] != '=' && s[i] != ',' {
		i++
	}
	name = trimOWS(s[:i])
	if i >= len(s) {
		return name, "", false, ""
	}
	if s[i] == ',' {
		return name, "", false, s[i+1:]
	}
	s = trimOWS(s[i+1:])
	hasValue = true
	if len(s) > 0 && s[0] == '"' {
		var b strings.Builder
		j := 1
		for ; j < len(s); j++ {
			c := s[j]
			if c == '\\' && j+1 < len(s) {
				j++
				b.WriteByte(s[j])
				continue
			}
			if c == '"' {
				j++
				break
			}
			b.WriteByte(c)
		}
		value = b.String()
		s = s[j:]
		// skip anything up to the next comma
		k := strings.IndexByte(s, ',')
		if k < 0 {
			return name, value, true, ""
		}
		return name, value, true, s[k+1:]
	}
	k := strings.IndexByte(s, ',')
	if k < 0 {
		return name, trimOWS(s), true, ""
	}
	return name, trimOWS(s[:k]), true, s[k+1:]
}

// trimOWS trims optional whitespace (spaces and tabs) from both ends of
// s, without strings.Trim's cutset set-up on every call.
func trimOWS(s string) string {
	i, j := 0, len(s)
	for i < j && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	for j > i && (s[j-1] == ' ' || s[j-1] == '\t') {
		j--
	}
	return s[i:j]
}

// varyFields returns the canonical field names listed in the Vary header
// lines, and whether one of them is "*".
func varyFields(lines []string) (fields []string, star bool) {
	for _, line := range lines {
		for f := range strings.SplitSeq(line, ",") {
			f = trimOWS(f)
			if f == "" {
				continue
			}
			if f == "*" {
				return nil, true
			}
			fields = append(fields, http.CanonicalHeaderKey(f))
		}
	}
	return fields, false
}
