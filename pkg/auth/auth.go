package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ErrUnauthenticated: no credential, or one that identifies nobody.
var ErrUnauthenticated = errors.New("unauthenticated")

// Config says where credentials are checked against. With neither file set, New returns nil
// and the gateway serves everyone (the default, for development).
type Config struct {
	// TokenFile is the API token file (see tokens.go for its format).
	TokenFile string
	// JWKSFile is a JSON Web Key Set; JWTs signed by one of its keys are accepted when they
	// name Issuer and Audience and have not expired.
	JWKSFile string
	Issuer   string
	Audience string
	// GrantsClaim is the JWT claim holding the grants ("triarch_grants" when empty).
	GrantsClaim string
	// Now is the clock for expiry and reload checks (time.Now when nil).
	Now func() time.Time
}

// Authenticator checks bearer tokens. It is safe for concurrent use.
type Authenticator struct {
	cfg    Config
	tokens *watched[[]token]
	keys   *watched[keySet]
}

// New builds the authenticator, reading its files once to report errors at startup. It
// returns nil, nil when no credential source is configured.
func New(cfg Config) (*Authenticator, error) {
	if cfg.TokenFile == "" && cfg.JWKSFile == "" {
		return nil, nil
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.GrantsClaim == "" {
		cfg.GrantsClaim = "triarch_grants"
	}
	a := &Authenticator{cfg: cfg}
	if cfg.TokenFile != "" {
		a.tokens = newWatched(cfg.TokenFile, parseTokens, cfg.Now)
	}
	if cfg.JWKSFile != "" {
		if cfg.Issuer == "" || cfg.Audience == "" {
			return nil, errors.New("auth: a JWKS needs the issuer and the audience JWTs must name")
		}
		a.keys = newWatched(cfg.JWKSFile, parseJWKS, cfg.Now)
	}
	if err := a.Reload(); err != nil {
		return nil, err
	}
	return a, nil
}

// Reload reads the files again if they changed, keeping the last good version of a file that
// does not parse; it returns the errors met.
func (a *Authenticator) Reload() error {
	var errs []error
	if a.tokens != nil {
		errs = append(errs, a.tokens.reload())
	}
	if a.keys != nil {
		errs = append(errs, a.keys.reload())
	}
	return errors.Join(errs...)
}

// Authenticate returns who presents the Authorization value authorization ("Bearer <token>").
// Errors wrap ErrUnauthenticated and say why without echoing the credential.
func (a *Authenticator) Authenticate(_ context.Context, authorization string) (*Identity, error) {
	scheme, cred, ok := strings.Cut(strings.TrimSpace(authorization), " ")
	switch {
	case authorization == "":
		return nil, fmt.Errorf("%w: no credentials: send \"Authorization: Bearer <token>\"", ErrUnauthenticated)
	case !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(cred) == "":
		return nil, fmt.Errorf("%w: the Authorization value must be \"Bearer <token>\"", ErrUnauthenticated)
	}
	cred = strings.TrimSpace(cred)
	if a.tokens != nil {
		if id := lookup(a.tokens.get(), cred); id != nil {
			return id, nil
		}
	}
	if a.keys != nil && strings.Count(cred, ".") == 2 {
		return a.verifyJWT(cred)
	}
	return nil, fmt.Errorf("%w: unknown token", ErrUnauthenticated)
}

func (a *Authenticator) verifyJWT(raw string) (*Identity, error) {
	keys := a.keys.get()
	var mc jwt.MapClaims
	_, err := jwt.ParseWithClaims(raw, &mc, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		key, ok := keys[kid]
		if !ok {
			return nil, fmt.Errorf("no key %q in the JWKS", kid)
		}
		// The key decides the algorithm family; the token's header must agree with it, or
		// an RSA public key could be offered as an HMAC secret.
		switch key.(type) {
		case *rsa.PublicKey:
			if _, ok := t.Method.(*jwt.SigningMethodRSA); !ok {
				if _, ok := t.Method.(*jwt.SigningMethodRSAPSS); !ok {
					return nil, fmt.Errorf("algorithm %s for an RSA key", t.Method.Alg())
				}
			}
		case *ecdsa.PublicKey:
			if _, ok := t.Method.(*jwt.SigningMethodECDSA); !ok {
				return nil, fmt.Errorf("algorithm %s for an EC key", t.Method.Alg())
			}
		case ed25519.PublicKey:
			if _, ok := t.Method.(*jwt.SigningMethodEd25519); !ok {
				return nil, fmt.Errorf("algorithm %s for an Ed25519 key", t.Method.Alg())
			}
		}
		return key, nil
	},
		jwt.WithValidMethods([]string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}),
		jwt.WithIssuer(a.cfg.Issuer), jwt.WithAudience(a.cfg.Audience), jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(a.cfg.Now), jwt.WithLeeway(30*time.Second))
	if err != nil {
		return nil, fmt.Errorf("%w: JWT refused: %w", ErrUnauthenticated, err)
	}
	sub, _ := mc.GetSubject()
	if sub == "" {
		return nil, fmt.Errorf("%w: JWT without a subject", ErrUnauthenticated)
	}
	grants, err := grantsOf(mc[a.cfg.GrantsClaim])
	if err != nil {
		return nil, fmt.Errorf("%w: JWT of %q: claim %s: %w", ErrUnauthenticated, sub, a.cfg.GrantsClaim, err)
	}
	return &Identity{Name: sub, Grants: grants}, nil
}

// grantsOf reads the grants claim, decoded by encoding/json into []any of map[string]any.
func grantsOf(v any) ([]Grant, error) {
	if v == nil {
		return nil, nil // authenticated, allowed nothing
	}
	list, ok := v.([]any)
	if !ok {
		return nil, errors.New("not a list")
	}
	in := make([]grantJSON, 0, len(list))
	for _, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			return nil, errors.New("a grant is not an object")
		}
		var g grantJSON
		g.Channels, _ = m["channels"].(string)
		acts, _ := m["actions"].([]any)
		for _, x := range acts {
			s, ok := x.(string)
			if !ok {
				return nil, errors.New("an action is not a string")
			}
			g.Actions = append(g.Actions, s)
		}
		in = append(in, g)
	}
	return parseGrants(in)
}
