package authfallback_test

import (
	"testing"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
)

func TestMemoryDPoPReplayCacheConformance(t *testing.T) {
	authtest.RunDPoPReplayCache(t, func(t *testing.T) authtest.DPoPReplayCache {
		return authfallback.NewMemoryDPoPReplayCache(0)
	})
}

var _ authfallback.DPoPReplayCache = authtest.DPoPReplayCache(nil)
