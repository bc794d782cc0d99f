// Package fault provides fault injection for HTTP dependencies: the faults
// of an outage drill (latency, transport errors, status codes, an outage,
// writes that execute and never answer), injected into a client's
// http.RoundTripper or in front of a server's http.Handler, per named
// dependency, at a rate, switched at run time in code or over HTTP.
//
// An [Injector] holds one [Fault] per dependency name ("idp", "payments",
// ...). Its [Injector.Transport] wraps the client that calls a dependency;
// its [Injector.Handler] (or [Injector.Middleware]) wraps the dependency's
// own handler, or a proxy in front of it. Either way, a request whose
// dependency has no fault set passes untouched: an Injector is inert unless
// configured, and costs one atomic load and one map lookup per request.
//
//	in := fault.New(fault.Config{})
//	client := &http.Client{Transport: in.Transport("payments", nil)}
//	_ = in.Set("payments", fault.Fault{Kind: fault.Status, Status: 503, Rate: 0.2})
//	_ = in.Set("payments", fault.Fault{Kind: fault.Hang, Methods: []string{"POST"}})
//	in.Clear("payments")
//
// The kinds, and what each does on either side:
//
//	Latency  waits Fault.Latency, then passes the request on
//	Status   answers Fault.Status (503 if zero) without passing the request on
//	Error    client: RoundTrip fails with ErrInjected; server: the connection is closed without an answer
//	Outage   client: connection refused (syscall.ECONNREFUSED), nothing sent; server: the connection is reset (RST)
//	Hang     the request is passed on and runs (a write has its side effect), then its answer is withheld
//	         until the caller gives up or Fault.MaxHang passes: the timeout after the fact that turns
//	         blind retries into duplicate side effects
//
// Fault.Latency delays every affected request before its Kind applies, so
// {Kind: Status, Latency: 2 * time.Second} is a slow 503. Fault.Rate is the
// share of requests affected (every request if zero); Fault.Methods limits
// a fault to some methods.
//
// [Injector.AdminHandler] lists, sets and clears faults over HTTP, so a
// team can run the same drill in staging against its real dependencies:
//
//	PUT or POST  {"dependency": "idp", "kind": "outage"}                      set (replaces) a fault
//	PUT or POST  {"dependency": "payments", "kind": "hang", "rate": 0.5,
//	              "latency": "200ms", "max_hang": "30s", "methods": ["POST"]}
//	DELETE       ?dependency=idp                                             clear one
//	DELETE                                                                    clear all
//	GET                                                                       {"faults": {...}}
//
// It does no authentication of its own: mount it only behind the service's
// admin authentication, on an internal listener, never on a public router.
//
// An Injector is safe for concurrent use; a fault set or cleared applies to
// the requests that start afterwards. Hooks (Config.OnInject) may be called
// concurrently and must not block.
package fault
