// Command loadshed is the load test of degrade's tier-aware shedding
// (Config.MaxConcurrent): a service whose handler spends -latency on each
// request (a downstream call, not CPU), behind a degrade.Controller that
// lets -max requests in at once and a degrade.Stale that answers shed
// reads. Its capacity is max/latency requests per second (1000 with the
// defaults).
//
//	GET  /items/{id}  Read      (stored by Stale: max-age=0)
//	POST /orders      Write
//	POST /pay         Critical
//
// Run the whole test, with vegeta as the load generator, with
//
//	examples/loadshed/run.sh
//
// which starts "loadshed serve", measures Critical requests alone, then
// sends twice the capacity (reads and writes, plus Critical requests at a
// tenth of the capacity) and prints "loadshed report" of each attack: the
// success ratio and latency percentiles per tier and per answer (served,
// shed to the stale cache, shed with 503).
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/holdfast-go/holdfast/degrade"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadshed serve [-addr a] [-max n] [-latency d] [-unlimited] | loadshed report < vegeta.json")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "report":
		if err := report(os.Stdin, os.Stdout); err != nil {
			log.Fatal(err)
		}
	default:
		log.Fatalf("unknown command %q", os.Args[1])
	}
}

func tier(r *http.Request) degrade.Tier {
	switch {
	case r.URL.Path == "/pay":
		return degrade.Critical
	case r.Method == http.MethodGet:
		return degrade.Read
	}
	return degrade.Write
}

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:18100", "listen address")
	maxC := fs.Int("max", 20, "degrade.Config.MaxConcurrent")
	latency := fs.Duration("latency", 20*time.Millisecond, "time each request spends in the handler")
	unlimited := fs.Bool("unlimited", false, "no MaxConcurrent: what the service does without shedding")
	_ = fs.Parse(args)

	stale := &degrade.Stale{}
	cfg := degrade.Config{Tier: tier, Stale: stale, MaxConcurrent: *maxC}
	if *unlimited {
		cfg.MaxConcurrent = 0
	}
	c := degrade.New(cfg)
	defer c.Close()
	// The downstream: a pool of -max connections, as a real service would
	// have; requests beyond it wait for one, so without shedding the wait
	// grows with the load.
	pool := make(chan struct{}, *maxC)
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pool <- struct{}{}
		time.Sleep(*latency)
		<-pool
		if r.Method == http.MethodGet {
			w.Header().Set("Cache-Control", "max-age=0")
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path":%q}`+"\n", r.URL.Path)
	})
	st := &stats{}
	mux := http.NewServeMux()
	mux.Handle("/", st.measure(c.Handler(stale.Handler(app))))
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) { st.write(w) })
	mux.HandleFunc("POST /stats/reset", func(w http.ResponseWriter, r *http.Request) { st.reset() })
	srv := &http.Server{
		Addr: *addr, Handler: mux,
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, IdleTimeout: time.Minute,
	}
	log.Printf("loadshed: %s, max %d, latency %v, capacity %.0f req/s, unlimited %v",
		*addr, *maxC, *latency, float64(*maxC)/latency.Seconds(), *unlimited)
	log.Fatal(srv.ListenAndServe())
}

// stats records, in the server, how long each answer took from the moment
// the request reached the gate to the moment its handler returned: the
// server's own share of the latency, without the load generator's and the
// network's.
type stats struct {
	mu sync.Mutex
	d  map[string][]time.Duration
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (s *stats) measure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		d := time.Since(start)
		code := sw.code
		if code == 0 {
			code = http.StatusOK
		}
		k := tier(r).String() + " " + answerOf(code, strings.Join(w.Header()[degrade.HeaderDegraded], ","))
		s.mu.Lock()
		if s.d == nil {
			s.d = map[string][]time.Duration{}
		}
		s.d[k] = append(s.d[k], d)
		s.mu.Unlock()
	})
}

func (s *stats) reset() { s.mu.Lock(); s.d = nil; s.mu.Unlock() }

func (s *stats) write(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintln(w, "server side, from the gate to the answer:")
	table(w, s.d)
}

func answerOf(code int, degraded string) string {
	switch {
	case code == 0:
		return "error"
	case strings.Contains(degraded, degrade.ReasonOverloaded):
		return "shed-stale"
	case code == http.StatusServiceUnavailable:
		return "shed-503"
	case code != http.StatusOK:
		return fmt.Sprintf("status-%d", code)
	}
	return "served"
}

func table(out io.Writer, groups map[string][]time.Duration) {
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	fmt.Fprintf(out, "%-20s %7s %9s %9s %9s %9s\n", "tier answer", "n", "p50", "p90", "p99", "max")
	for _, k := range keys {
		d := slices.Clone(groups[k])
		slices.Sort(d)
		q := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
		fmt.Fprintf(out, "%-20s %7d %9v %9v %9v %9v\n", k, len(d),
			q(0.5).Round(10*time.Microsecond), q(0.9).Round(10*time.Microsecond),
			q(0.99).Round(10*time.Microsecond), d[len(d)-1].Round(10*time.Microsecond))
	}
}

// result is the part of a vegeta JSON result line that the report needs.
type result struct {
	Method  string              `json:"method"`
	URL     string              `json:"url"`
	Code    int                 `json:"code"`
	Latency int64               `json:"latency"` // ns
	Error   string              `json:"error"`
	Headers map[string][]string `json:"headers"`
}

func report(in io.Reader, out io.Writer) error {
	groups := map[string][]time.Duration{}
	ok := map[string]int{}
	total := map[string]int{}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return err
		}
		t := "read"
		switch {
		case strings.HasSuffix(r.URL, "/pay"):
			t = "critical"
		case r.Method == http.MethodPost:
			t = "write"
		}
		answer := answerOf(r.Code, strings.Join(r.Headers[degrade.HeaderDegraded], ","))
		total[t]++
		if r.Code == http.StatusOK && answer == "served" {
			ok[t]++
		}
		groups[t+" "+answer] = append(groups[t+" "+answer], time.Duration(r.Latency))
		groups[t+" all"] = append(groups[t+" all"], time.Duration(r.Latency))
	}
	if err := sc.Err(); err != nil {
		return err
	}
	for _, t := range []string{"critical", "write", "read"} {
		if total[t] > 0 {
			fmt.Fprintf(out, "%-8s requests %6d  served 200 %6.2f %%\n", t, total[t], 100*float64(ok[t])/float64(total[t]))
		}
	}
	fmt.Fprintln(out, "client side (vegeta):")
	table(out, groups)
	return nil
}
