package main

import (
	"bytes"
	"fmt"
	"html"
)

// svg draws, per stack, the share of requests answered 2xx and the share
// answered 2xx but degraded (stale, queued 202, degraded auth or mode) over
// time, from the same answers as the table, with the phases as bands and a
// lettered marker for every event of the timeline. Plain SVG, written by
// hand: no dependency.
func (rep *report) svg() []byte {
	const (
		w                = 960
		left, right, top = 60, 20, 84
		panelH, gap      = 180, 76
		legendLineH      = 16
	)
	pw := float64(w - left - right)
	end := 1.0
	if n := len(rep.Timeline); n > 0 {
		end = rep.Timeline[n-1].AtS + rep.Timeline[0].AtS + 0.5
	}
	if len(rep.Phases) > 1 {
		end = max(end, rep.Phases[len(rep.Phases)-2].ToS+4)
	}
	labeled := 0
	for _, e := range rep.Events {
		if e.Label != "" {
			labeled++
		}
	}
	h := top + 2*panelH + gap + 50 + (labeled+4)*legendLineH
	x := func(s float64) float64 { return left + pw*min(s, end)/end }
	half := rep.step() / 2 // a bucket is drawn at its middle
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="15">holdfast outage drill, %d replicas per stack: share of requests answered 2xx, and 2xx but degraded</text>`+"\n", left, rep.Fleet.Replicas)
	fmt.Fprintf(&b, `<text x="%d" y="38" fill="#555">per %.1fs of send time; degraded = stale, queued (202), degraded authentication or mode; markers A-K: the timeline below</text>`+"\n", left, rep.step())
	shades := []string{"#f6f6f6", "#fde8e8", "#eef4fb", "#fdf3e1", "#eaf6ea", "#f6f6f6"}
	colors := [2]string{"#1f6feb", "#d1242f"}
	for si, name := range stackNames {
		py := float64(top + si*(panelH+gap))
		y := func(r float64) float64 { return py + float64(panelH)*(1-r) }
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" font-size="14" font-weight="bold" fill="%s">%s</text>`+"\n", left, py-24, colors[si], name)
		fmt.Fprintf(&b, `<rect x="%d" y="%.1f" width="14" height="3" fill="%s"/><text x="%d" y="%.1f">2xx</text>`+"\n", left+80, py-30, colors[si], left+98, py-24)
		fmt.Fprintf(&b, `<rect x="%d" y="%.1f" width="14" height="10" fill="%s" fill-opacity="0.25"/><text x="%d" y="%.1f">2xx but degraded</text>`+"\n", left+140, py-33, colors[si], left+158, py-24)
		for i, p := range rep.Phases {
			if p.FromS >= end {
				continue
			}
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%d" fill="%s"/>`+"\n", x(p.FromS), py, max(0, x(p.ToS)-x(p.FromS)), panelH, shades[i%len(shades)])
			if si == 1 {
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#444">%s</text>`+"\n", (x(p.FromS)+x(min(p.ToS, end)))/2, py+float64(panelH)+30, html.EscapeString(p.Name))
			}
		}
		for _, r := range []float64{0, 0.5, 1} {
			fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ccc"/>`+"\n", left, w-right, y(r), y(r))
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%d %%</text>`+"\n", left-6, y(r)+4, int(r*100))
		}
		for s := 0.0; s <= end; s += 10 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#666">%gs</text>`+"\n", x(s), py+float64(panelH)+14, s)
		}
		// The degraded share, as an area.
		fmt.Fprintf(&b, `<polygon fill="%s" fill-opacity="0.25" stroke="none" points="`, colors[si])
		var first, last float64 = -1, -1
		for _, pt := range rep.Timeline {
			if pt.DegradedShare[si] < 0 {
				continue
			}
			if first < 0 {
				first = pt.AtS
				fmt.Fprintf(&b, "%.1f,%.1f ", x(pt.AtS+half), y(0))
			}
			last = pt.AtS + half
			fmt.Fprintf(&b, "%.1f,%.1f ", x(pt.AtS+half), y(pt.DegradedShare[si]))
		}
		if last >= 0 {
			fmt.Fprintf(&b, "%.1f,%.1f", x(last), y(0))
		}
		b.WriteString(`"/>` + "\n")
		// The 2xx share, as a line.
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="`, colors[si])
		for _, pt := range rep.Timeline {
			if pt.OKShare[si] < 0 {
				continue
			}
			fmt.Fprintf(&b, "%.1f,%.1f ", x(pt.AtS+half), y(pt.OKShare[si]))
		}
		b.WriteString(`"/>` + "\n")
		for _, e := range rep.Events {
			if e.Label == "" {
				continue
			}
			fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#333" stroke-dasharray="3,3"/>`+"\n", x(e.AtS), x(e.AtS), py, py+float64(panelH))
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-weight="bold">%s</text>`+"\n", x(e.AtS), py-4, html.EscapeString(e.Label))
		}
	}
	ly := top + 2*panelH + gap + 50
	for _, e := range rep.Events {
		if e.Label == "" {
			continue
		}
		what := e.What
		if len(what) > 130 {
			what = what[:127] + "..."
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d"><tspan font-weight="bold">%s</tspan> %.1fs  %s</text>`+"\n", left, ly, e.Label, e.AtS, html.EscapeString(what))
		ly += legendLineH
	}
	// The promises, as the table gives them.
	for i, si := range []int{stackHoldfast, stackNaive} {
		p, name := rep.Fleet.Holdfast, "holdfast"
		override := secsOr(p.OverridePropagationSeconds, "never")
		if si == stackNaive {
			p, name, override = rep.Fleet.Naive, "naive", "no switch"
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#555" font-size="11">%s: %d lost, %d duplicated, %d hard 401 in grace, reads 2xx in IdP outage %s, replaced replica verified %s, recovery %s, override %s</text>`+"\n",
			left, ly+6+i*legendLineH, name, p.LostWrites, p.DuplicateExecutions, p.Hard401WithinGrace,
			fmt.Sprintf("%.1f%%", 100*p.ReadsOKShare), yesNo(p.ReplacedReplicaVerified), secsOr(p.RecoverySeconds, "never"), override)
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// step is the width of a timeline bucket, in seconds.
func (rep *report) step() float64 {
	if len(rep.Timeline) < 2 {
		return 1
	}
	return rep.Timeline[1].AtS - rep.Timeline[0].AtS
}
