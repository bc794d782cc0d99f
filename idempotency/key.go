package idempotency

import (
	"encoding/binary"
	"errors"
	"strings"
)

// MaxKeyLength is the longest Idempotency-Key value accepted, in bytes after
// unquoting.
const MaxKeyLength = 255

var (
	errKeyEmpty    = errors.New("idempotency: empty Idempotency-Key")
	errKeyTooLong  = errors.New("idempotency: Idempotency-Key longer than 255 characters")
	errKeyMultiple = errors.New("idempotency: several Idempotency-Key header lines")
	errKeySyntax   = errors.New("idempotency: malformed Idempotency-Key")
)

// parseKey parses the values of the Idempotency-Key header lines. The value
// is an RFC 9651 sf-string ("..." with \" and \\ escapes, printable ASCII),
// also accepted unquoted as a run of visible ASCII without quotes,
// backslashes, commas or semicolons. Exactly one header line is allowed;
// surrounding spaces and tabs are ignored; parameters are not accepted.
func parseKey(values []string) (string, error) {
	if len(values) != 1 {
		if len(values) == 0 {
			return "", errKeyEmpty
		}
		return "", errKeyMultiple
	}
	v := strings.Trim(values[0], " \t")
	if v == "" {
		return "", errKeyEmpty
	}
	if v[0] != '"' {
		if len(v) > MaxKeyLength {
			return "", errKeyTooLong
		}
		for i := 0; i < len(v); i++ {
			c := v[i]
			if c <= 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == ',' || c == ';' {
				return "", errKeySyntax
			}
		}
		return v, nil
	}
	// sf-string: DQUOTE *( unescaped / "%" / "\" ( DQUOTE / "\" ) ) DQUOTE
	var (
		b       []byte // only when an escape is seen
		escaped = false
	)
	for i := 1; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\':
			i++
			if i == len(v) || (v[i] != '"' && v[i] != '\\') {
				return "", errKeySyntax
			}
			if !escaped {
				b = append(make([]byte, 0, len(v)), v[1:i-1]...)
				escaped = true
			}
			b = append(b, v[i])
		case c == '"':
			if i != len(v)-1 {
				return "", errKeySyntax // trailing content or parameters
			}
			key := v[1:i]
			if escaped {
				key = string(b)
			}
			if key == "" {
				return "", errKeyEmpty
			}
			if len(key) > MaxKeyLength {
				return "", errKeyTooLong
			}
			return key, nil
		case c < 0x20 || c >= 0x7f:
			return "", errKeySyntax
		default:
			if escaped {
				b = append(b, c)
			}
		}
	}
	return "", errKeySyntax // unterminated
}

// formatKey returns key as an RFC 9651 sf-string.
func formatKey(key string) string {
	if !strings.ContainsAny(key, `"\`) {
		return `"` + key + `"`
	}
	var sb strings.Builder
	sb.WriteByte('"')
	for i := 0; i < len(key); i++ {
		if key[i] == '"' || key[i] == '\\' {
			sb.WriteByte('\\')
		}
		sb.WriteByte(key[i])
	}
	sb.WriteByte('"')
	return sb.String()
}

// encodeHex writes the lower-case hex of src to dst, as hex.Encode does,
// four bytes at a time; len(src) must be a multiple of 4.
func encodeHex(dst, src []byte) {
	_ = dst[2*len(src)-1]
	for i := 0; i+4 <= len(src); i += 4 {
		x := uint64(binary.LittleEndian.Uint32(src[i:]))
		// Spread byte k of x to the low byte of 16-bit lane k, then split
		// it into its high nibble (byte 2k) and low nibble (byte 2k+1).
		x = (x | x<<16) & 0x0000ffff0000ffff
		x = (x | x<<8) & 0x00ff00ff00ff00ff
		n := (x>>4)&0x000f000f000f000f | (x<<8)&0x0f000f000f000f00
		// '0' + n, and 39 more for n >= 10 ('a' - '0' - 10).
		ge10 := ((n + 0x0606060606060606) >> 4) & 0x0101010101010101
		binary.LittleEndian.PutUint64(dst[2*i:], n+0x3030303030303030+ge10*39)
	}
}
