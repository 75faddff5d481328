package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
)

// tokenFile is the API token file:
//
//	{"tokens": [
//	  {"name": "chat-server", "sha256": "<hex of the token's SHA-256>",
//	   "grants": [{"channels": "room-*", "actions": ["send", "read", "subscribe"]}]},
//	  {"name": "ops", "token": "a plain token, for tries",
//	   "grants": [{"channels": "*", "actions": ["create", "admin"]}]}]}
type tokenFile struct {
	Tokens []struct {
		Name   string      `json:"name"`
		SHA256 string      `json:"sha256"`
		Token  string      `json:"token"`
		Grants []grantJSON `json:"grants"`
	} `json:"tokens"`
}

// token is one parsed entry: the SHA-256 of the secret and who presents it.
type token struct {
	sum [sha256.Size]byte
	id  *Identity
}

// parseTokens reads a token file's contents.
func parseTokens(data []byte) ([]token, error) {
	var f tokenFile
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	out := make([]token, 0, len(f.Tokens))
	names := map[string]bool{}
	for i, t := range f.Tokens {
		if t.Name == "" {
			return nil, fmt.Errorf("token file: token %d has no name", i)
		}
		if names[t.Name] {
			return nil, fmt.Errorf("token file: name %q listed twice", t.Name)
		}
		names[t.Name] = true
		var tok token
		switch {
		case (t.SHA256 == "") == (t.Token == ""):
			return nil, fmt.Errorf("token file: token %q needs exactly one of sha256 and token", t.Name)
		case t.Token != "":
			tok.sum = sha256.Sum256([]byte(t.Token))
		default:
			b, err := hex.DecodeString(t.SHA256)
			if err != nil || len(b) != sha256.Size {
				return nil, fmt.Errorf("token file: token %q: sha256 must be %d hex digits", t.Name, 2*sha256.Size)
			}
			copy(tok.sum[:], b)
		}
		grants, err := parseGrants(t.Grants)
		if err != nil {
			return nil, fmt.Errorf("token file: token %q: %w", t.Name, err)
		}
		tok.id = &Identity{Name: t.Name, Grants: grants}
		out = append(out, tok)
	}
	return out, nil
}

// lookup finds the identity presenting secret. Every entry is compared, in constant time, so
// that the time taken tells nothing of which one nearly matched.
func lookup(tokens []token, secret string) *Identity {
	sum := sha256.Sum256([]byte(secret))
	var found *Identity
	for _, t := range tokens {
		if subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1 {
			found = t.id
		}
	}
	return found
}
