package authtest

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// While a Server is down its port is free: one from the ephemeral range
// would be given to the next outgoing connection or ":0" listener that
// wants it, and SetDown(false) would panic ("address already in use"; a
// flaky pgstore TestAuthStateFleet). The port is below that range.
func TestListenerPortOutsideEphemeralRange(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Skip("no ip_local_port_range to compare with")
	}
	low, err := strconv.Atoi(strings.Fields(string(b))[0])
	require.NoError(t, err)
	require.Greater(t, low, 11000, "this system's ephemeral range leaves no room below it")
	for range 20 {
		l, err := newSwitchListener()
		require.NoError(t, err)
		_, p, err := net.SplitHostPort(l.addr.String())
		require.NoError(t, err)
		port, err := strconv.Atoi(p)
		require.NoError(t, err)
		assert.Less(t, port, low, "below the ephemeral range")
		require.NoError(t, l.setDown(true))
		require.NoError(t, l.setDown(false), "up again on the same port")
		require.NoError(t, l.Close())
	}
}
