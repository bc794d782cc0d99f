package main

import (
	"bytes"
	"fmt"
	"html"
)

// svg draws the success rate over time of both stacks, with the phases as
// bands. Plain SVG, written by hand: no dependency.
func (rep *report) svg() []byte {
	const (
		w, h                   = 900, 360
		left, right, top, bott = 60, 20, 40, 60
	)
	pw, ph := float64(w-left-right), float64(h-top-bott)
	end := rep.Phases[len(rep.Phases)-1].ToS
	if end <= 0 {
		end = 1
	}
	x := func(s float64) float64 { return left + pw*s/end }
	y := func(r float64) float64 { return top + ph*(1-r) }
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="15">holdfast outage drill: share of requests answered 2xx</text>`+"\n", left)
	shades := []string{"#f4f4f4", "#fde8e8", "#fdf3e1", "#eaf6ea"}
	for i, p := range rep.Phases {
		fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%.1f" fill="%s"/>`+"\n", x(p.FromS), top, x(p.ToS)-x(p.FromS), ph, shades[i%len(shades)])
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", (x(p.FromS)+x(p.ToS))/2, h-bott+32, html.EscapeString(p.Name))
	}
	for _, r := range []float64{0, 0.25, 0.5, 0.75, 1} {
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ccc"/>`+"\n", left, w-right, y(r), y(r))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%d %%</text>`+"\n", left-6, y(r)+4, int(r*100))
	}
	for s := 0.0; s <= end; s += 5 {
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" fill="#666">%gs</text>`+"\n", x(s), h-bott+14, s)
	}
	colors := [2]string{"#1f6feb", "#d1242f"}
	for si := range 2 {
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="`, colors[si])
		for _, pt := range rep.Timeline {
			if pt.Rate[si] < 0 || pt.AtS > end {
				continue
			}
			fmt.Fprintf(&b, "%.1f,%.1f ", x(pt.AtS), y(pt.Rate[si]))
		}
		b.WriteString(`"/>` + "\n")
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="14" height="4" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			w-right-200+si*100, 26, colors[si], w-right-180+si*100, 31, stackNames[si])
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}
