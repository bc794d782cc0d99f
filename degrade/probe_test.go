package degrade

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type report struct {
	at  time.Time
	dep string
	err error
}

type reports struct {
	mu sync.Mutex
	l  []report
}

func (r *reports) add(dep string, err error) {
	r.mu.Lock()
	r.l = append(r.l, report{time.Now(), dep, err})
	r.mu.Unlock()
}

func (r *reports) get() []report {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]report(nil), r.l...)
}

func TestProbeTimingAndOutcomes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var healthy atomic.Bool
		healthy.Store(true)
		rt := rtFunc(func(r *http.Request) (*http.Response, error) {
			switch r.URL.Host {
			case "jwks.example":
				if healthy.Load() {
					return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("{}")), Request: r}, nil
				}
				return &http.Response{StatusCode: 503, Body: http.NoBody, Request: r}, nil
			case "hang.example":
				<-r.Context().Done()
				return nil, r.Context().Err()
			}
			return nil, errors.New("dial: connection refused")
		})
		var got reports
		p := &Probe{
			Targets: []Target{
				{Dependency: "idp", URL: "https://jwks.example/keys"},
				{Dependency: "slow", URL: "https://hang.example/"},
			},
			Report:   got.add,
			Interval: 10 * time.Second,
			Jitter:   2 * time.Second,
			Timeout:  time.Second,
			Client:   &http.Client{Transport: rt},
		}
		start := time.Now()
		p.Start()
		p.Start() // no-op
		synctest.Wait()
		l := got.get()
		require.Len(t, l, 1, "first check of idp at once; slow is still waiting for its timeout")
		assert.Equal(t, "idp", l[0].dep)
		assert.NoError(t, l[0].err)
		assert.Equal(t, start, l[0].at)

		time.Sleep(time.Second)
		synctest.Wait()
		l = got.get()
		require.Len(t, l, 2)
		assert.Equal(t, "slow", l[1].dep)
		assert.ErrorIs(t, l[1].err, context.DeadlineExceeded)

		healthy.Store(false)
		time.Sleep(60 * time.Second)
		synctest.Wait()
		var idp []report
		for _, r := range got.get() {
			if r.dep == "idp" {
				idp = append(idp, r)
			}
		}
		// 61 s at 10 s ± 2 s: between 5 and 8 checks after the first.
		assert.GreaterOrEqual(t, len(idp), 1+5)
		assert.LessOrEqual(t, len(idp), 1+8)
		for i := 1; i < len(idp); i++ {
			gap := idp[i].at.Sub(idp[i-1].at)
			assert.GreaterOrEqual(t, gap, 8*time.Second)
			assert.LessOrEqual(t, gap, 12*time.Second)
		}
		var se *StatusError
		require.ErrorAs(t, idp[len(idp)-1].err, &se)
		assert.Equal(t, 503, se.StatusCode)

		p.Close()
		n := len(got.get())
		time.Sleep(time.Minute)
		synctest.Wait()
		assert.Len(t, got.get(), n, "no reports after Close")
	})
}

func TestProbeIntoController(t *testing.T) {
	var fail atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			w.WriteHeader(http.StatusBadGateway)
		}
	}))
	defer srv.Close()
	c := New(Config{MinReports: 1, Dependencies: map[string]Mode{"idp": ReadOnly}})
	defer c.Close()
	fail.Store(true)
	p := &Probe{
		Targets:  []Target{{Dependency: "idp", URL: srv.URL}},
		Report:   c.Report,
		Interval: time.Hour,
	}
	p.Start()
	defer p.Close()
	require.Eventually(t, func() bool { return c.Mode() == ReadOnly }, 5*time.Second, 5*time.Millisecond)
	assert.Contains(t, c.Reason(), "idp")
}

func TestProbeCustomCheckAndBadURL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var got reports
		p := &Probe{
			Targets: []Target{
				{Dependency: "token", URL: "https://idp.example/token", Check: func(r *http.Response) error {
					if r.StatusCode == http.StatusMethodNotAllowed {
						return nil // reachable
					}
					return errors.New("unexpected")
				}},
				{Dependency: "bad", URL: "://nope"},
			},
			Report: got.add,
			Client: &http.Client{Transport: rtFunc(func(r *http.Request) (*http.Response, error) {
				return &http.Response{StatusCode: 405, Body: http.NoBody, Request: r}, nil
			})},
		}
		p.Start()
		synctest.Wait()
		p.Close()
		l := got.get()
		require.Len(t, l, 2)
		for _, r := range l {
			if r.dep == "token" {
				assert.NoError(t, r.err)
			} else {
				assert.Error(t, r.err)
			}
		}
	})
}

// Close must return even when a Start runs while it waits: the new round's
// goroutines are not the ones Close stops.
func TestProbeCloseRacingStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var calls atomic.Int32
		p := &Probe{
			Targets:  []Target{{Dependency: "d", URL: "https://d.example/"}},
			Interval: time.Hour,
			Client: &http.Client{Transport: rtFunc(func(r *http.Request) (*http.Response, error) {
				if calls.Add(1) == 1 {
					<-release // the first check ends only once Close is waiting
				}
				return &http.Response{StatusCode: 200, Body: http.NoBody, Request: r}, nil
			})},
		}
		p.Start()
		synctest.Wait()
		closed := make(chan struct{})
		go func() { p.Close(); close(closed) }()
		synctest.Wait() // Close has cancelled round 1 and waits for its check
		p.Start()       // round 2 starts while Close waits
		synctest.Wait()
		close(release)
		synctest.Wait()
		select {
		case <-closed:
		default:
			t.Fatal("Close waits for goroutines of a later Start")
		}
		p.Close()
	})
}
