package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
)

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"*", "", true}, {"*", "anything", true}, {"room", "room", true}, {"room", "rooms", false},
		{"room-*", "room-1", true}, {"room-*", "room-", true}, {"room-*", "roo", false}, {"room-*", "xroom-1", false},
		{"*-eu", "chat-eu", true}, {"*-eu", "chat-us", false}, {"a*b*c", "abc", true}, {"a*b*c", "aXbYc", true},
		{"a*b*c", "abcbc", true}, {"a*b*c", "acb", false}, {"a*b", "ab", true}, {"a*a", "a", false}, {"**", "x", true},
	} {
		require.Equal(t, tc.want, Match(tc.pattern, tc.s), "%q ~ %q", tc.pattern, tc.s)
	}
}

func TestIdentityAllows(t *testing.T) {
	id := &Identity{Name: "x", Grants: []Grant{{Channels: "room-*", Actions: []Action{Send, Read}}, {Channels: "*", Actions: []Action{Subscribe}}}}
	require.True(t, id.Allows(Send, "room-1"))
	require.True(t, id.Allows(Read, "room-1"))
	require.False(t, id.Allows(Create, "room-1"))
	require.False(t, id.Allows(Send, "lobby"))
	require.True(t, id.Allows(Subscribe, "lobby"))
	require.False(t, (*Identity)(nil).Allows(Send, "room-1"))
	for _, a := range []Action{Send, Read, Subscribe, Create, Admin} {
		got, err := ParseAction(a.String())
		require.NoError(t, err)
		require.Equal(t, a, got)
	}
	_, err := ParseAction("write")
	require.Error(t, err)
}

func writeFile(t *testing.T, path string, v any) {
	t.Helper()
	data, err := json.Marshal(v)
	require.NoError(t, err)
	// Written elsewhere and renamed, as an operator's tool would, so a reader never sees half.
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, data, 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

func tokensDoc(entries ...map[string]any) map[string]any { return map[string]any{"tokens": entries} }

func TestTokens(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens.json")
	sum := sha256.Sum256([]byte("s3cret"))
	writeFile(t, path, tokensDoc(
		map[string]any{"name": "chat", "sha256": hex.EncodeToString(sum[:]),
			"grants": []map[string]any{{"channels": "room-*", "actions": []string{"send", "read"}}}},
		map[string]any{"name": "ops", "token": "plain", "grants": []map[string]any{{"channels": "*", "actions": []string{"admin"}}}},
	))
	now := time.Unix(1000, 0)
	a, err := New(Config{TokenFile: path, Now: func() time.Time { return now }})
	require.NoError(t, err)

	id, err := a.Authenticate(context.Background(), "Bearer s3cret")
	require.NoError(t, err)
	require.Equal(t, "chat", id.Name)
	require.True(t, id.Allows(Send, "room-9"))
	id, err = a.Authenticate(context.Background(), "bearer   plain ")
	require.NoError(t, err)
	require.Equal(t, "ops", id.Name)
	for _, bad := range []string{"", "Bearer", "Bearer ", "Basic s3cret", "s3cret", "Bearer wrong"} {
		_, err := a.Authenticate(context.Background(), bad)
		require.ErrorIs(t, err, ErrUnauthenticated, "%q", bad)
		require.NotContains(t, err.Error(), "s3cret", "errors never echo a credential")
	}

	// Rotation: the file changes, and after reloadEvery the new token works and the old fails.
	writeFile(t, path, tokensDoc(map[string]any{"name": "chat", "token": "n3w",
		"grants": []map[string]any{{"channels": "room-*", "actions": []string{"send"}}}}))
	now = now.Add(reloadEvery)
	_, err = a.Authenticate(context.Background(), "Bearer n3w")
	require.NoError(t, err)
	_, err = a.Authenticate(context.Background(), "Bearer s3cret")
	require.ErrorIs(t, err, ErrUnauthenticated)

	// A broken file keeps the last good version, and says why.
	require.NoError(t, os.WriteFile(path, []byte("{not json"), 0o600))
	require.Error(t, a.Reload())
	_, err = a.Authenticate(context.Background(), "Bearer n3w")
	require.NoError(t, err)
}

func TestTokenFileErrors(t *testing.T) {
	for name, doc := range map[string]string{
		"not json":       `{`,
		"unknown field":  `{"tokens": [], "extra": 1}`,
		"no name":        `{"tokens": [{"token": "x", "grants": [{"channels": "*", "actions": ["read"]}]}]}`,
		"both secrets":   `{"tokens": [{"name": "a", "token": "x", "sha256": "00", "grants": []}]}`,
		"no secret":      `{"tokens": [{"name": "a", "grants": []}]}`,
		"short sha256":   `{"tokens": [{"name": "a", "sha256": "abcd", "grants": []}]}`,
		"bad action":     `{"tokens": [{"name": "a", "token": "x", "grants": [{"channels": "*", "actions": ["write"]}]}]}`,
		"no pattern":     `{"tokens": [{"name": "a", "token": "x", "grants": [{"actions": ["read"]}]}]}`,
		"no action":      `{"tokens": [{"name": "a", "token": "x", "grants": [{"channels": "*"}]}]}`,
		"duplicate name": `{"tokens": [{"name": "a", "token": "x", "grants": []}, {"name": "a", "token": "y", "grants": []}]}`,
	} {
		_, err := parseTokens([]byte(doc))
		require.Error(t, err, name)
	}
	path := filepath.Join(t.TempDir(), "missing.json")
	_, err := New(Config{TokenFile: path})
	require.Error(t, err, "a missing file fails at startup")
	a, err := New(Config{})
	require.NoError(t, err)
	require.Nil(t, a, "nothing configured: no authentication")
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// jwtEnv is a JWKS with one EC and one Ed25519 key, and an authenticator trusting it.
type jwtEnv struct {
	ec   *ecdsa.PrivateKey
	ed   ed25519.PrivateKey
	auth *Authenticator
	now  time.Time
}

func newJWTEnv(t *testing.T) *jwtEnv {
	t.Helper()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	edPub, ed, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	ecdh, err := ec.PublicKey.ECDH()
	require.NoError(t, err)
	raw := ecdh.Bytes() // 0x04 || X || Y
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeFile(t, path, map[string]any{"keys": []map[string]any{
		{"kty": "EC", "kid": "ec1", "crv": "P-256", "x": b64u(raw[1:33]), "y": b64u(raw[33:])},
		{"kty": "OKP", "kid": "ed1", "crv": "Ed25519", "x": b64u(edPub)},
		{"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}, // for encryption: skipped
	}})
	env := &jwtEnv{ec: ec, ed: ed, now: time.Unix(1_800_000_000, 0)}
	env.auth, err = New(Config{JWKSFile: path, Issuer: "https://idp.example", Audience: "triarch",
		Now: func() time.Time { return env.now }})
	require.NoError(t, err)
	return env
}

func (e *jwtEnv) sign(t *testing.T, method jwt.SigningMethod, kid string, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	require.NoError(t, err)
	return s
}

func (e *jwtEnv) claims(mod func(jwt.MapClaims)) jwt.MapClaims {
	c := jwt.MapClaims{"iss": "https://idp.example", "aud": "triarch", "sub": "user-7",
		"exp":            e.now.Add(time.Hour).Unix(),
		"triarch_grants": []any{map[string]any{"channels": "dm-user-7-*", "actions": []any{"send", "read", "subscribe"}}}}
	if mod != nil {
		mod(c)
	}
	return c
}

func TestJWT(t *testing.T) {
	e := newJWTEnv(t)
	ctx := context.Background()
	for _, tc := range []struct {
		method jwt.SigningMethod
		kid    string
		key    any
	}{{jwt.SigningMethodES256, "ec1", e.ec}, {jwt.SigningMethodEdDSA, "ed1", e.ed}} {
		id, err := e.auth.Authenticate(ctx, "Bearer "+e.sign(t, tc.method, tc.kid, tc.key, e.claims(nil)))
		require.NoError(t, err, tc.kid)
		require.Equal(t, "user-7", id.Name)
		require.True(t, id.Allows(Send, "dm-user-7-9"))
		require.False(t, id.Allows(Send, "dm-user-8-9"))
	}
	refused := map[string]string{
		"expired":        e.sign(t, jwt.SigningMethodES256, "ec1", e.ec, e.claims(func(c jwt.MapClaims) { c["exp"] = e.now.Add(-time.Hour).Unix() })),
		"no expiry":      e.sign(t, jwt.SigningMethodES256, "ec1", e.ec, e.claims(func(c jwt.MapClaims) { delete(c, "exp") })),
		"other issuer":   e.sign(t, jwt.SigningMethodES256, "ec1", e.ec, e.claims(func(c jwt.MapClaims) { c["iss"] = "evil" })),
		"other audience": e.sign(t, jwt.SigningMethodES256, "ec1", e.ec, e.claims(func(c jwt.MapClaims) { c["aud"] = "other" })),
		"no subject":     e.sign(t, jwt.SigningMethodES256, "ec1", e.ec, e.claims(func(c jwt.MapClaims) { delete(c, "sub") })),
		"bad grants":     e.sign(t, jwt.SigningMethodES256, "ec1", e.ec, e.claims(func(c jwt.MapClaims) { c["triarch_grants"] = "all" })),
		"unknown kid":    e.sign(t, jwt.SigningMethodES256, "nope", e.ec, e.claims(nil)),
		"wrong key":      e.sign(t, jwt.SigningMethodEdDSA, "ec1", e.ed, e.claims(nil)),
		"hmac":           e.sign(t, jwt.SigningMethodHS256, "ec1", []byte("guess"), e.claims(nil)),
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	refused["forged"] = e.sign(t, jwt.SigningMethodES256, "ec1", other, e.claims(nil))
	for name, tok := range refused {
		_, err := e.auth.Authenticate(ctx, "Bearer "+tok)
		require.ErrorIs(t, err, ErrUnauthenticated, name)
	}
	// No grants claim: authenticated, allowed nothing.
	id, err := e.auth.Authenticate(ctx, "Bearer "+e.sign(t, jwt.SigningMethodES256, "ec1", e.ec,
		e.claims(func(c jwt.MapClaims) { delete(c, "triarch_grants") })))
	require.NoError(t, err)
	require.False(t, id.Allows(Read, "anything"))
}

func TestJWKSErrors(t *testing.T) {
	for name, doc := range map[string]string{
		"not json":      `{`,
		"empty":         `{"keys": []}`,
		"unknown type":  `{"keys": [{"kty": "oct", "kid": "a", "k": "AAAA"}]}`,
		"bad curve":     `{"keys": [{"kty": "EC", "kid": "a", "crv": "P-192", "x": "AA", "y": "AA"}]}`,
		"off curve":     `{"keys": [{"kty": "EC", "kid": "a", "crv": "P-256", "x": "` + b64u(make([]byte, 32)) + `", "y": "` + b64u(make([]byte, 32)) + `"}]}`,
		"short rsa":     `{"keys": [{"kty": "RSA", "kid": "a", "n": "` + b64u(make([]byte, 128)) + `", "e": "AQAB"}]}`,
		"bad ed25519":   `{"keys": [{"kty": "OKP", "kid": "a", "crv": "Ed25519", "x": "AAAA"}]}`,
		"duplicate kid": `{"keys": [{"kty": "OKP", "kid": "a", "crv": "Ed25519", "x": "` + b64u(make([]byte, 32)) + `"}, {"kty": "OKP", "kid": "a", "crv": "Ed25519", "x": "` + b64u(make([]byte, 32)) + `"}]}`,
	} {
		_, err := parseJWKS([]byte(doc))
		require.Error(t, err, name)
	}
	_, err := New(Config{JWKSFile: "x"})
	require.Error(t, err, "a JWKS needs an issuer and an audience")
}

// The parsers take files an operator writes and tokens anyone sends: no input may panic them.
func FuzzParsers(f *testing.F) {
	f.Add([]byte(`{"tokens": [{"name": "a", "token": "x", "grants": [{"channels": "r-*", "actions": ["read"]}]}]}`), "r-*a*", "r-1a")
	f.Add([]byte(`{"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}`), "*", "")
	f.Fuzz(func(t *testing.T, data []byte, pattern, s string) {
		_, _ = parseTokens(data)
		_, _ = parseJWKS(data)
		if !Match(pattern, pattern) {
			t.Fatalf("%q does not match itself", pattern)
		}
		if !strings.Contains(pattern, "*") && Match(pattern, s) != (pattern == s) {
			t.Fatalf("%q without a star matched %q", pattern, s)
		}
	})
}
