//go:build race

package store_test

// raceEnabled: the race detector slows SQLite (Go code, transpiled from C)
// some fifteenfold.
const raceEnabled = true
