// Package authtest provides a fake identity provider (IdP) for tests of code
// that verifies or fetches OAuth 2.0 / JWT access tokens.
//
// A [Server] runs on an httptest.Server and serves a JWKS endpoint
// ([Server.JWKSURL]), an OAuth 2.0 token endpoint for the client_credentials
// grant ([Server.TokenURL], usable with golang.org/x/oauth2/clientcredentials)
// and an OpenID discovery document. [Server.Issue] signs tokens with the
// current key (RS256 by default, ES256 or EdDSA through [Config.Algorithm]
// and [NewWithConfig]), [Server.Rotate] rotates the key, and switches simulate the outages a
// service must survive:
//
//	idp := authtest.New()
//	defer idp.Close()
//	tok := idp.Issue(jwt.MapClaims{"scope": "read"})
//	idp.SetDown(true)        // connections refused
//	idp.SetFail5xx(true)     // 503 from every endpoint
//	idp.SetSlow(time.Second) // answers delayed
//	idp.SetEmptyKeySet(true) // 200 {"keys":[]}
//	idp.SetGarbage(true)     // 200 with an HTML error page
//	idp.Reset()              // all switches off
//
// [Server.JWKSHits] and [Server.TokenHits] count the requests that reached
// each endpoint. A Server is safe for concurrent use.
package authtest
