package redisstore_test

import (
	"testing"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
	"github.com/holdfast-go/holdfast/redisstore"
)

var _ authfallback.DPoPReplayCache = (*redisstore.DPoPReplayCache)(nil)

func TestDPoPReplayCacheConformance(t *testing.T) {
	c := newClient(t)
	authtest.RunDPoPReplayCache(t, func(t *testing.T) authtest.DPoPReplayCache {
		return redisstore.NewDPoPReplayCache(c, newPrefix(t, c))
	})
}
