// Package tests holds whole-cluster tests: they boot the real services in this process (the
// same wiring as `triarch dev`, from services/suite) on loopback ports with t.TempDir() data.
package tests
