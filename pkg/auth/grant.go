package auth

import (
	"fmt"
	"strings"
)

// Action is what a caller does to a channel.
type Action uint8

// The actions, one per kind of RPC.
const (
	Send Action = iota + 1
	Read
	Subscribe
	Create
	Admin
)

var actionNames = [...]string{Send: "send", Read: "read", Subscribe: "subscribe", Create: "create", Admin: "admin"}

func (a Action) String() string {
	if int(a) < len(actionNames) && actionNames[a] != "" {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// ParseAction reads an action's name.
func ParseAction(s string) (Action, error) {
	for a, n := range actionNames {
		if n != "" && n == s {
			return Action(a), nil
		}
	}
	return 0, fmt.Errorf("unknown action %q (want send, read, subscribe, create or admin)", s)
}

// Grant allows Actions on the channels Channels matches.
type Grant struct {
	Channels string
	Actions  []Action
}

// grantJSON is a grant as files and claims write it.
type grantJSON struct {
	Channels string   `json:"channels"`
	Actions  []string `json:"actions"`
}

func (g grantJSON) parse() (Grant, error) {
	if g.Channels == "" {
		return Grant{}, fmt.Errorf("grant without a channel pattern")
	}
	out := Grant{Channels: g.Channels}
	for _, s := range g.Actions {
		a, err := ParseAction(s)
		if err != nil {
			return Grant{}, fmt.Errorf("grant for %q: %w", g.Channels, err)
		}
		out.Actions = append(out.Actions, a)
	}
	if len(out.Actions) == 0 {
		return Grant{}, fmt.Errorf("grant for %q names no action", g.Channels)
	}
	return out, nil
}

func parseGrants(in []grantJSON) ([]Grant, error) {
	out := make([]Grant, 0, len(in))
	for _, g := range in {
		p, err := g.parse()
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Identity is an authenticated caller.
type Identity struct {
	// Name is the token's name, or the JWT's subject.
	Name   string
	Grants []Grant
}

// Allows reports whether the identity may do a to channel.
func (id *Identity) Allows(a Action, channel string) bool {
	if id == nil {
		return false
	}
	for _, g := range id.Grants {
		for _, ga := range g.Actions {
			if ga == a && Match(g.Channels, channel) {
				return true
			}
		}
	}
	return false
}

// Match reports whether s matches pattern, where "*" stands for any run of characters
// (including none) and every other character for itself.
func Match(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return len(s) >= len(last) && strings.HasSuffix(s, last)
}
