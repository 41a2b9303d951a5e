package tests

import (
	"context"
	"os/exec"
	"testing"
	"time"
)

func contextTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// cmdTimeout bounds every program a test runs: a hang fails that test
// with the program's name instead of stalling the whole run.
const cmdTimeout = 3 * time.Minute

// command is exec.Command for a test: the program is killed after
// cmdTimeout, or when the test ends if it is still running then.
func command(t testing.TB, name string, args ...string) *exec.Cmd {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, name, args...)
	// Output pipes of a killed program's children do not keep Wait
	// waiting.
	cmd.WaitDelay = 10 * time.Second
	return cmd
}
