package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/holdfast-go/holdfast/authfallback/authtest"
	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/examples/internal/stack"
	"github.com/holdfast-go/holdfast/fault"
	"github.com/holdfast-go/holdfast/idempotency"
)

// headerReplica names the replica that answered, set by each replica (not
// by the proxy), so the load sees which replica served it.
const headerReplica = "Drill-Replica"

// Fault injection dependency names.
const (
	depIdP        = "idp"
	depDownstream = "downstream"
)

// timeline is the drill's clock and schedule.
type timeline struct {
	start    time.Time
	tokenTTL time.Duration
	// writeOnlyNow: clients send only writes (re-sends and polls included).
	writeOnlyNow atomic.Bool
}

func (t *timeline) since() time.Duration { return time.Since(t.start) }
func (t *timeline) writeOnly() bool      { return t.writeOnlyNow.Load() }

// idpFront is the identity provider as the drill runs it: authtest's JWKS,
// a token endpoint for the drill's subjects and the revocation list, all
// behind the fault injector's "idp" dependency.
type idpFront struct {
	idp    *authtest.Server
	revs   *revocationServer
	ttl    time.Duration
	srv    *httptest.Server
	client *http.Client
}

const (
	tokenPath       = "/drill/token"
	revocationsPath = "/drill/revocations"
)

func newIdPFront(faults *fault.Injector, ttl time.Duration) *idpFront {
	f := &idpFront{idp: authtest.New(), revs: newRevocationServer(), ttl: ttl}
	mux := http.NewServeMux()
	mux.HandleFunc(tokenPath, f.serveToken)
	mux.Handle(revocationsPath, f.revs)
	mux.Handle("/", f.idp.Handler())
	f.srv = httptest.NewServer(faults.Handler(depIdP, mux))
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true // every refresh meets the IdP as it is now
	f.client = &http.Client{Transport: tr, Timeout: 2 * time.Second}
	return f
}

func (f *idpFront) close() { f.srv.Close(); f.idp.Close() }

func (f *idpFront) jwksURL() string        { return f.srv.URL + authtest.JWKSPath }
func (f *idpFront) revocationsURL() string { return f.srv.URL + revocationsPath }

// issue signs a token for sub, valid for the drill's token TTL.
func (f *idpFront) issue(sub string) (string, time.Time) { return f.issueFor(sub, f.ttl) }

// issueFor signs a token for sub, valid for ttl.
func (f *idpFront) issueFor(sub string, ttl time.Duration) (string, time.Time) {
	exp := time.Now().Add(ttl)
	return f.idp.Issue(jwt.MapClaims{"sub": sub, "scope": "read write", "exp": exp.Unix()}), time.Unix(exp.Unix(), 0)
}

// serveToken is the drill's token endpoint: POST sub=... gets an access
// token for sub (a stand-in for a refresh-token grant). A revoked subject
// gets none.
func (f *idpFront) serveToken(w http.ResponseWriter, r *http.Request) {
	sub := r.PostFormValue("sub")
	if r.Method != http.MethodPost || sub == "" {
		http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
		return
	}
	if f.revs.revoked(sub) {
		http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
		return
	}
	tok, exp := f.issue(sub)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": int(time.Until(exp).Seconds())})
}

// token refreshes sub's token at the IdP.
func (f *idpFront) token(ctx context.Context, sub string) (string, time.Time, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.srv.URL+tokenPath, strings.NewReader(url.Values{"sub": {sub}}.Encode()))
	if err != nil {
		return "", time.Time{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := f.client.Do(req)
	if err != nil {
		return "", time.Time{}, err
	}
	defer resp.Body.Close()
	var v struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 16<<10)).Decode(&v) != nil {
		return "", time.Time{}, fmt.Errorf("token endpoint answered %d", resp.StatusCode)
	}
	exp, err := tokenExp(v.AccessToken)
	if err != nil {
		return "", time.Time{}, err
	}
	return v.AccessToken, exp, nil
}

// tokenExp reads a JWT's exp, as a client reads its own token (unverified).
func tokenExp(raw string) (time.Time, error) {
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(raw, claims); err != nil {
		return time.Time{}, err
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return time.Time{}, errors.New("token without exp")
	}
	return exp.Time, nil
}

// replica is one instance of a stack's service, on its own listener, with
// an internal admin listener of its own (holdfast only).
type replica struct {
	name  string
	srv   *httptest.Server
	admin *httptest.Server // the degrade AdminHandler; nil for naive
	svc   *stack.Service   // holdfast
	nv    *naive           // naive
	url   *url.URL
}

func (r *replica) mode() degrade.Mode {
	if r.svc == nil {
		return degrade.Normal
	}
	return r.svc.Controller.Mode()
}

func (r *replica) close() {
	r.srv.Close()
	if r.admin != nil {
		r.admin.Close()
	}
	if r.svc != nil {
		r.svc.Close()
	}
	if r.nv != nil {
		r.nv.close()
	}
}

func newReplica(name string, h http.Handler, svc *stack.Service, nv *naive) *replica {
	r := &replica{name: name, svc: svc, nv: nv}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set(headerReplica, name)
		h.ServeHTTP(w, req)
	}))
	if svc != nil {
		r.admin = httptest.NewServer(svc.Controller.AdminHandler())
	}
	r.url, _ = url.Parse(r.srv.URL)
	return r
}

// fleet is a stack's replicas behind a round-robin reverse proxy (the load
// balancer).
type fleet struct {
	mu       sync.Mutex
	replicas []*replica // in rotation
	retired  []*replica
	n        atomic.Uint64
	proxy    *httptest.Server
}

func newFleet(rs []*replica) *fleet {
	f := &fleet{replicas: rs}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(f.pick().url)
			pr.Out.Host = pr.In.Host
		},
		Transport: tr,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.WriteHeader(http.StatusBadGateway) // the replica did not answer
		},
	}
	f.proxy = httptest.NewServer(rp)
	return f
}

func (f *fleet) pick() *replica {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.replicas[int(f.n.Add(1)-1)%len(f.replicas)]
}

func (f *fleet) current() []*replica {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*replica(nil), f.replicas...)
}

// replace puts nr in the rotation in place of the replica at i; the old
// one finishes its in-flight requests and stops a second later.
func (f *fleet) replace(i int, nr *replica) *replica {
	f.mu.Lock()
	old := f.replicas[i]
	f.replicas[i] = nr
	f.retired = append(f.retired, old)
	f.mu.Unlock()
	time.AfterFunc(time.Second, old.close)
	return old
}

func (f *fleet) close() {
	f.proxy.Close()
	for _, r := range f.current() {
		r.close()
	}
}

// queueWatch wraps the shared idempotency store to know which writes were
// queued, so the drill can ask the store itself whether the queue is empty.
type queueWatch struct {
	idempotency.Store
	mu   sync.Mutex
	keys map[string]struct{} // still queued at the last count
	all  map[string]string   // every key queued -> its caller's subject
	// bearer counts the queued requests stored with their Authorization
	// header (a plaintext bearer token in the shared store).
	bearer int
}

func newQueueWatch(s idempotency.Store) *queueWatch {
	return &queueWatch{Store: s, keys: map[string]struct{}{}, all: map[string]string{}}
}

func (q *queueWatch) Enqueue(ctx context.Context, key, fp string, req idempotency.Request, ttl time.Duration) (idempotency.Record, bool, error) {
	rec, created, err := q.Store.Enqueue(ctx, key, fp, req, ttl)
	if err == nil && created {
		sub := ""
		auth := req.Header.Get("Authorization")
		if raw, ok := strings.CutPrefix(auth, "Bearer "); ok {
			claims := jwt.MapClaims{}
			if _, _, err := jwt.NewParser().ParseUnverified(raw, claims); err == nil {
				sub, _ = claims.GetSubject()
			}
		}
		q.mu.Lock()
		q.keys[key] = struct{}{}
		q.all[key] = sub
		if auth != "" {
			q.bearer++
		}
		q.mu.Unlock()
	}
	return rec, created, err
}

// outcomes reads, for every write ever queued, what the store holds now:
// the stored status of a replayed one, "queued" for one still waiting.
// The revoked subject's are counted apart.
func (q *queueWatch) outcomes(ctx context.Context) (others, revoked map[string]int, bearer int) {
	q.mu.Lock()
	all := make(map[string]string, len(q.all))
	for k, v := range q.all {
		all[k] = v
	}
	bearer = q.bearer
	q.mu.Unlock()
	others, revoked = map[string]int{}, map[string]int{}
	for k, sub := range all {
		m := others
		if sub == revokedSubject {
			m = revoked
		}
		rec, ok, err := q.Store.Get(ctx, k)
		switch {
		case err != nil:
			m["store error"]++
		case !ok:
			m["gone"]++
		case rec.State == idempotency.StateDone && rec.Response != nil:
			m[fmt.Sprint(rec.Response.Status)]++
		default:
			m["still queued"]++
		}
	}
	return others, revoked, bearer
}

// queued counts the records still waiting in the store's queue (queued,
// or claimed by a replay that has not completed), asking the store with 4
// requests at a time.
func (q *queueWatch) queued(ctx context.Context) (int, error) {
	q.mu.Lock()
	keys := make([]string, 0, len(q.keys))
	for k := range q.keys {
		keys = append(keys, k)
	}
	q.mu.Unlock()
	var (
		mu       sync.Mutex
		n        int
		firstErr error
		wg       sync.WaitGroup
	)
	work := make(chan string)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range work {
				rec, ok, err := q.Store.Get(ctx, k)
				mu.Lock()
				switch {
				case err != nil:
					if firstErr == nil {
						firstErr = err
					}
				case ok && (rec.State == idempotency.StateQueued || rec.State == idempotency.StateInFlight && rec.Request != nil):
					n++
				default:
					q.mu.Lock()
					delete(q.keys, k)
					q.mu.Unlock()
				}
				mu.Unlock()
			}
		}()
	}
	for _, k := range keys {
		work <- k
	}
	close(work)
	wg.Wait()
	return n, firstErr
}
