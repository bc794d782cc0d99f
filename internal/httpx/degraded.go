package httpx

import "strings"

// AddDegraded adds reason to the Holdfast-Degraded field of h, which lists
// every reason that applies as one comma-separated value ("read-only,
// jwks-unreachable, stale-if-error"): reasons already there are kept (a
// later fallback never hides an earlier one) and a reason already listed is
// not repeated. Several field lines (a handler that called Add) are joined
// into one. An empty reason changes nothing.
func AddDegraded(h map[string][]string, reason string) {
	reason = strings.TrimSpace(reason)
	if reason == "" {
		return
	}
	vs := h[HeaderDegraded]
	switch len(vs) {
	case 0:
		h[HeaderDegraded] = []string{reason}
		return
	case 1:
		if vs[0] == reason || vs[0] == "" {
			h[HeaderDegraded] = []string{reason}
			return
		}
	}
	var b strings.Builder
	n := 0
	seen := func(s string) bool {
		cur := b.String()
		for p := range strings.SplitSeq(cur, ",") {
			if strings.TrimSpace(p) == s {
				return true
			}
		}
		return false
	}
	add := func(s string) {
		if s = strings.TrimSpace(s); s == "" || (n > 0 && seen(s)) {
			return
		}
		if n > 0 {
			b.WriteString(", ")
		}
		b.WriteString(s)
		n++
	}
	for _, v := range vs {
		for p := range strings.SplitSeq(v, ",") {
			add(p)
		}
	}
	for p := range strings.SplitSeq(reason, ",") {
		add(p)
	}
	h[HeaderDegraded] = []string{b.String()}
}

// DegradedReasons returns the reasons listed in the Holdfast-Degraded field
// of h, in order.
func DegradedReasons(h map[string][]string) []string {
	var out []string
	for _, v := range h[HeaderDegraded] {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}
