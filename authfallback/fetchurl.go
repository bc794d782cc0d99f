package authfallback

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Keys and revocations are fetched over https only: whoever can answer a
// plain http fetch can plant keys or lift revocations. Plain http is
// allowed to loopback hosts (127.0.0.0/8, ::1, "localhost"), for tests and
// local development; nothing else is.

var errInsecureRedirect = errors.New("authfallback: redirect refused: it leaves https or is not an allowed fetch URL")

// checkFetchURL accepts an absolute https URL, or an http URL to a
// loopback host.
func checkFetchURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil {
		return fmt.Errorf("authfallback: invalid URL %q", raw)
	}
	return checkFetchScheme(u)
}

func checkFetchScheme(u *url.URL) error {
	switch {
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && isLoopbackHost(u.Hostname()):
		return nil
	}
	return fmt.Errorf("authfallback: URL %q must be https (plain http only to a loopback host)", u.Redacted())
}

// isLoopbackHost reports whether host is "localhost" or a loopback IP
// literal. No name is resolved.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkRedirect refuses a redirect that downgrades the scheme (once a hop
// was https, every later one must be https) or goes to a URL checkFetchURL
// would refuse; at most 10 redirects, as net/http.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("authfallback: stopped after 10 redirects")
	}
	if err := checkFetchScheme(req.URL); err != nil {
		return errInsecureRedirect
	}
	for _, r := range via {
		if r.URL.Scheme == "https" && req.URL.Scheme != "https" {
			return errInsecureRedirect
		}
	}
	return nil
}

// fetchClient returns the client used for key and revocation fetches: a
// shallow copy of c (nil: a client with http.DefaultTransport) whose
// CheckRedirect applies checkRedirect first, then c's own CheckRedirect if
// it has one. c itself is not modified.
func fetchClient(c *http.Client) *http.Client {
	if c == nil {
		return &http.Client{Transport: http.DefaultTransport, CheckRedirect: checkRedirect}
	}
	cc := *c
	user := c.CheckRedirect
	cc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if err := checkRedirect(req, via); err != nil {
			return err
		}
		if user != nil {
			return user(req, via)
		}
		return nil
	}
	return &cc
}
