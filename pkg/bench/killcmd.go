package bench

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// ExpandKillCmd fills a --kill-cmd template: {node} becomes the node id, {address} its address
// as the cluster reports it. The result is run by sh -c, so a value that could change the
// command's meaning (anything beyond letters, digits and . : _ - [ ]) is refused rather than
// quoted: the template's author may already have quoted the placeholder.
func ExpandKillCmd(tmpl string, node uint64, address string) (string, error) {
	if strings.TrimSpace(tmpl) == "" {
		return "", fmt.Errorf("kill command: empty template")
	}
	for _, r := range address {
		if !shellSafe(r) {
			return "", fmt.Errorf("kill command: node %d address %q has %q, which is not safe to substitute into a shell command", node, address, r)
		}
	}
	return strings.NewReplacer("{node}", strconv.FormatUint(node, 10), "{address}", address).Replace(tmpl), nil
}

func shellSafe(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	}
	return strings.ContainsRune(".:_-[]", r)
}

// RunKillCmd runs an expanded kill command with sh -c and returns its combined output with the
// error when it fails.
func RunKillCmd(ctx context.Context, cmd string) error {
	out, err := exec.CommandContext(ctx, "sh", "-c", cmd).CombinedOutput()
	if err != nil {
		return fmt.Errorf("kill command %q: %w: %s", cmd, err, strings.TrimSpace(string(out)))
	}
	return nil
}
