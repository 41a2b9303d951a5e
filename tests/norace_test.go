//go:build !race

package tests

// raceEnabled: the tests run under the race detector.
const raceEnabled = false
