package authfallback

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/holdfast-go/holdfast/internal/httpx"
)

// OIDC discovery (OpenID Connect Discovery 1.0 §4, RFC 8414 §3). With
// Config.Discovery set, every refresh of the key set first fetches
// <Issuer without a trailing "/">/.well-known/openid-configuration, whose
// "issuer" must equal Config.Issuer exactly and whose "jwks_uri" must be a
// fetch URL (https, or http to a loopback host). The key set is then
// fetched from Config.JWKSURLs first (explicit URLs win; the first is the
// primary, the others alternates), then from the discovered jwks_uri when
// it is not one of them. A document that cannot be fetched or is refused
// leaves the last-known-good one in use; it is kept in memory and, with a
// Config.CacheFile, in the sibling file CacheFile+DiscoveryFileSuffix
// (same hardened reader and atomic writer), so that a restart while the
// IdP is down knows its key set URL at once.

// Discovery constants.
const (
	// DiscoveryPath is appended to the issuer (without its trailing "/")
	// to find the discovery document.
	DiscoveryPath = "/.well-known/openid-configuration"
	// DiscoveryFileSuffix is appended to Config.CacheFile to name the file
	// that keeps the last-known-good discovery document.
	DiscoveryFileSuffix = ".discovery"
	// MaxDiscoverySize bounds a discovery document read from outside.
	MaxDiscoverySize = 256 << 10
)

// discoveryFileVersion is the version of the discovery sibling file.
const discoveryFileVersion = 1

// DiscoveryDocument is what holdfast uses of an issuer's discovery
// document.
type DiscoveryDocument struct {
	// Issuer is the "issuer" member, equal to Config.Issuer.
	Issuer string
	// JWKSURI is the "jwks_uri" member.
	JWKSURI string
	// IntrospectionEndpoint is the "introspection_endpoint" member (RFC
	// 8414), "" if absent.
	IntrospectionEndpoint string
	// FetchedAt is when the document was fetched (possibly by an earlier
	// run, through the sibling of CacheFile).
	FetchedAt time.Time
}

type discovery struct {
	url  string
	file string

	mu  sync.Mutex
	doc *DiscoveryDocument
	raw []byte
}

func newDiscovery(v *Verifier) *discovery {
	d := &discovery{url: discoveryURL(v.cfg.Issuer)}
	if v.cfg.CacheFile != "" {
		d.file = v.cfg.CacheFile + DiscoveryFileSuffix
		doc, raw, err := readDiscoveryFile(d.file, v.cfg.Issuer, time.Now())
		switch {
		case err == nil:
			d.doc, d.raw = doc, raw
			v.audit.LogAttrs(v.ctx, slog.LevelInfo, "authfallback: discovery document loaded from cache file",
				slog.String("jwks_uri", doc.JWKSURI))
		case errors.Is(err, fs.ErrNotExist):
		default:
			v.audit.LogAttrs(v.ctx, slog.LevelWarn, "authfallback: discovery cache file refused", slog.String("error", err.Error()))
		}
	}
	return d
}

// discoveryURL is the discovery document URL of issuer.
func discoveryURL(issuer string) string {
	return strings.TrimSuffix(issuer, "/") + DiscoveryPath
}

// Discovery returns the discovery document in use, and false when
// Config.Discovery is not set or no document was obtained yet.
func (v *Verifier) Discovery() (DiscoveryDocument, bool) {
	d := v.idp.disc
	if d == nil {
		return DiscoveryDocument{}, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.doc == nil {
		return DiscoveryDocument{}, false
	}
	return *d.doc, true
}

// fetchURLs returns the JWKS URLs to try, in order. With discovery it
// refreshes the discovery document first; the error is returned only when
// there is no URL at all to try.
func (v *Verifier) fetchURLs(ctx context.Context) ([]string, error) {
	if !v.cfg.Discovery {
		return v.cfg.JWKSURLs, nil
	}
	d := v.idp.disc
	doc, raw, err := v.fetchDiscovery(ctx, d.url)
	if err == nil {
		d.mu.Lock()
		d.doc, d.raw = doc, raw
		d.mu.Unlock()
		if d.file != "" {
			if werr := writeDiscoveryFile(d.file, doc, raw); werr != nil {
				v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: discovery cache file not written", slog.String("error", werr.Error()))
			}
		}
	} else if ctx.Err() == nil {
		v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: discovery document not refreshed, the last-known-good one stays in use",
			slog.String("url", d.url), slog.String("error", err.Error()))
	}
	d.mu.Lock()
	cur := d.doc
	d.mu.Unlock()
	urls := append([]string(nil), v.cfg.JWKSURLs...)
	if cur != nil && !contains(urls, cur.JWKSURI) {
		urls = append(urls, cur.JWKSURI)
	}
	if len(urls) == 0 {
		if err == nil {
			err = &FetchError{URL: d.url, Invalid: true, Err: errors.New("no jwks_uri")}
		}
		return nil, err
	}
	return urls, nil
}

// fetchDiscovery GETs and parses the discovery document.
func (v *Verifier) fetchDiscovery(ctx context.Context, u string) (*DiscoveryDocument, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, v.cfg.fetchTimeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, &FetchError{URL: u, Err: err}
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, nil, &FetchError{URL: u, Err: err}
	}
	defer httpx.DrainClose(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, nil, &FetchError{URL: u, StatusCode: resp.StatusCode, Err: fmt.Errorf("status %d", resp.StatusCode)}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxDiscoverySize+1))
	if err != nil {
		return nil, nil, &FetchError{URL: u, StatusCode: resp.StatusCode, Err: err}
	}
	doc, err := parseDiscoveryDocument(b, v.cfg.Issuer)
	if err != nil {
		return nil, nil, &FetchError{URL: u, StatusCode: resp.StatusCode, Invalid: true, Err: err}
	}
	doc.FetchedAt = time.Now()
	return doc, b, nil
}

// ErrDiscoveryDocument is the error of a discovery document that is
// refused: not a JSON object, larger than MaxDiscoverySize, for another
// issuer, or without a usable jwks_uri.
var ErrDiscoveryDocument = errors.New("authfallback: discovery document refused")

// parseDiscoveryDocument parses an OpenID Connect discovery document (or
// RFC 8414 authorization server metadata) for issuer: its "issuer" must
// equal issuer exactly (OIDC Discovery §4.3, RFC 8414 §3.3), its
// "jwks_uri" must be an https URL (http only to a loopback host), and so
// must "introspection_endpoint" when present. Errors match
// ErrDiscoveryDocument.
func parseDiscoveryDocument(b []byte, issuer string) (*DiscoveryDocument, error) {
	if len(b) > MaxDiscoverySize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrDiscoveryDocument, MaxDiscoverySize)
	}
	var m struct {
		Issuer        *string `json:"issuer"`
		JWKSURI       *string `json:"jwks_uri"`
		Introspection *string `json:"introspection_endpoint"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDiscoveryDocument, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data", ErrDiscoveryDocument)
	}
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, fmt.Errorf("%w: not a JSON object", ErrDiscoveryDocument)
	}
	if m.Issuer == nil || *m.Issuer != issuer || issuer == "" {
		return nil, fmt.Errorf("%w: issuer does not equal %q", ErrDiscoveryDocument, issuer)
	}
	if m.JWKSURI == nil {
		return nil, fmt.Errorf("%w: no jwks_uri", ErrDiscoveryDocument)
	}
	if err := checkFetchURL(*m.JWKSURI); err != nil {
		return nil, fmt.Errorf("%w: jwks_uri: %w", ErrDiscoveryDocument, err)
	}
	doc := &DiscoveryDocument{Issuer: *m.Issuer, JWKSURI: *m.JWKSURI}
	if m.Introspection != nil {
		if err := checkFetchURL(*m.Introspection); err != nil {
			return nil, fmt.Errorf("%w: introspection_endpoint: %w", ErrDiscoveryDocument, err)
		}
		doc.IntrospectionEndpoint = *m.Introspection
	}
	return doc, nil
}

// discoveryFileDoc is the content of the discovery sibling file.
type discoveryFileDoc struct {
	Version   int             `json:"version"`
	Issuer    string          `json:"issuer"`
	FetchedAt time.Time       `json:"fetched_at"`
	Document  json.RawMessage `json:"document"`
}

func writeDiscoveryFile(path string, doc *DiscoveryDocument, raw []byte) error {
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return err
	}
	b, err := json.Marshal(discoveryFileDoc{
		Version: discoveryFileVersion, Issuer: doc.Issuer, FetchedAt: doc.FetchedAt.UTC(), Document: compact.Bytes(),
	})
	if err != nil {
		return err
	}
	return writeFileAtomic(path, b)
}

func readDiscoveryFile(path, issuer string, now time.Time) (*DiscoveryDocument, []byte, error) {
	b, err := readCacheBytes(path, 2*MaxDiscoverySize)
	if err != nil {
		return nil, nil, err
	}
	return parseDiscoveryFile(b, issuer, now)
}

// parseDiscoveryFile parses the discovery sibling file: the version, the
// issuer binding and the document itself are checked as on a fetch.
func parseDiscoveryFile(b []byte, issuer string, now time.Time) (*DiscoveryDocument, []byte, error) {
	var d discoveryFileDoc
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, nil, fmt.Errorf("authfallback: discovery cache file: %w", err)
	}
	if d.Version != discoveryFileVersion {
		return nil, nil, fmt.Errorf("authfallback: discovery cache file: unknown version %d", d.Version)
	}
	if d.Issuer != issuer {
		return nil, nil, fmt.Errorf("authfallback: discovery cache file: written for issuer %q, not %q", d.Issuer, issuer)
	}
	if d.FetchedAt.IsZero() || d.FetchedAt.After(now.Add(maxClockSkewCacheFile)) {
		return nil, nil, errors.New("authfallback: discovery cache file: invalid fetched_at")
	}
	doc, err := parseDiscoveryDocument(d.Document, issuer)
	if err != nil {
		return nil, nil, fmt.Errorf("authfallback: discovery cache file: %w", err)
	}
	doc.FetchedAt = d.FetchedAt
	return doc, d.Document, nil
}
