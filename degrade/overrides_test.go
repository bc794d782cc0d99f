package degrade_test

import (
	"context"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/degrade/overridetest"
)

func TestMemoryOverridesConformance(t *testing.T) {
	overridetest.Run(t, func(t *testing.T) (degrade.OverrideStore, func() degrade.OverrideStore) {
		s := degrade.NewMemoryOverrides()
		return s, func() degrade.OverrideStore { return s }
	})
}

// Issue 14 point 4: two replicas sharing an override store; an operator
// acts on one, the other follows within a second.
func TestFleetSharesMemoryOverrides(t *testing.T) {
	s := degrade.NewMemoryOverrides()
	overridetest.Fleet(t, s, s)
}

// slowWriteOverrides is an override store whose writes block until
// release is closed, so a poll can read it while a write is in flight.
type slowWriteOverrides struct {
	*degrade.MemoryOverrides
	writing chan struct{} // closed when a write begins
	release chan struct{}
}

func (s *slowWriteOverrides) SetMode(ctx context.Context, o *degrade.ModeOverride) error {
	close(s.writing)
	<-s.release
	return s.MemoryOverrides.SetMode(ctx, o)
}

// A poll that reads the store while a local override is being written (it
// reads what was there before) does not undo the override it raced with:
// the flaky TestOverridesFleet of pgstore saw the replica the operator used
// back in Normal mode right after its admin handler answered.
func TestPollDuringOverrideWriteKeepsTheOverride(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &slowWriteOverrides{MemoryOverrides: degrade.NewMemoryOverrides(),
			writing: make(chan struct{}), release: make(chan struct{})}
		c := degrade.New(degrade.Config{Overrides: s, OverridePoll: 50 * time.Millisecond,
			AuditLog: slog.New(slog.DiscardHandler)})
		defer c.Close()
		synctest.Wait() // the first poll is done

		forced := make(chan struct{})
		go func() { c.Force(degrade.ReadOnly, "incident"); close(forced) }()
		<-s.writing
		assert.Equal(t, degrade.ReadOnly, c.Mode(), "applied here before the store is written")
		time.Sleep(100 * time.Millisecond) // polls read the store: not yet written
		synctest.Wait()
		assert.Equal(t, degrade.ReadOnly, c.Mode(), "a poll during the write does not undo it")
		close(s.release)
		<-forced
		assert.Equal(t, degrade.ReadOnly, c.Mode())
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		assert.Equal(t, degrade.ReadOnly, c.Mode(), "the store holds it now")
	})
}
