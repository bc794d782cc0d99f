package stack

import "net/http"

// clientBreaker and serverBreaker are placeholders until package breaker
// lands.
func (s *Service) clientBreaker(rt http.RoundTripper) http.RoundTripper { return rt }
func (s *Service) serverBreaker(h http.Handler) http.Handler            { return h }
