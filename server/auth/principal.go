// Package auth owns who may do what on the server: operators and their
// passwords, second factors and sessions, API tokens' scopes, the roles a
// principal holds in each tenant, and the policy table that maps every API
// permission to the roles that have it (DESIGN.md §8).
//
// Authorization is decided in one place: the API's middleware asks
// Authorize with the permission its policy table names for the route and
// the tenant the request touches. Handlers never check roles themselves.
//
// # Logging in
//
// Service keeps operators. Passwords are hashed with argon2id (DefaultParams:
// m=64 MiB, t=2, p=1, above OWASP's minimum, about 80 ms a verification on
// the reference machine; the parameters are stored in each PHC hash and a
// weaker hash is redone at its owner's next login); at most two hashes
// run at once and at most 32 more wait, so a burst of logins cannot starve
// the server. Platform admins, tenant admins and anyone who enrolled TOTP
// (RFC 6238, ±1 step) must give a TOTP code or one of ten single-use
// recovery codes; a TOTP step is accepted once per user. A login answers a
// session token (prefix dts_, 32 random bytes, stored as SHA-256, 12 hours).
// Refusals never say whether the name exists: an unknown name costs the same
// argon2id verification as a wrong password.
//
// Abuse policy (DefaultLimitPolicy), checked before any hashing, refusals
// answered 429 with Retry-After:
//   - per client address (IPv4 address or IPv6 /64): 20 attempts a minute,
//     bursts of 10, across all accounts;
//   - per account and address: 5 consecutive failures are free, then the
//     next attempt waits 1 s, 2 s, 4 s … up to 15 minutes. Only that address
//     waits: someone hammering an account from one address never locks its
//     owner out elsewhere;
//   - per account, second factor: 5 consecutive wrong TOTP or recovery codes
//     after a right password are free, then the same doubling wait for the
//     account's second-factor attempts from every address (only someone who
//     knows the password gets there);
//   - per user, TOTP enrollment (which replaces the factor and the recovery
//     codes): 5, then one every 10 minutes;
//   - a success clears the account's counts; a count is forgotten an hour
//     after its last failure. Counts live in each replica's memory.
package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// Roles, in increasing order of what they may do within a tenant.
const (
	RoleViewer    = "viewer"    // sees devices, events, alerts, summaries
	RoleOperator  = "operator"  // viewer + device commands, rollouts
	RolePublisher = "publisher" // CI: publishes firmware for its models
	RoleAdmin     = "admin"     // operator + users, tokens, tenant settings
)

// Roles lists the tenant roles.
var Roles = []string{RoleViewer, RoleOperator, RolePublisher, RoleAdmin}

// ValidRole reports whether r is a tenant role.
func ValidRole(r string) bool { return slices.Contains(Roles, r) }

// Principal is who a request acts as: an operator's session, an API token,
// or the data directory's bootstrap admin token.
type Principal struct {
	// Kind is KindSession, KindToken or KindBootstrap.
	Kind string
	// ID is the session's user ID, the token's ID, or "bootstrap".
	ID string
	// Platform marks a platform admin: manages tenants and TUF keys and
	// may act in every tenant.
	Platform bool
	// Tenants maps each tenant the principal belongs to to its role there.
	Tenants map[string]string
	// Models, when not nil, limits a publisher to these models.
	Models []string
}

// Kinds of principal.
const (
	KindSession   = "session"
	KindToken     = "token"
	KindBootstrap = "bootstrap"
)

// ErrForbidden is wrapped by Authorize's refusals.
var ErrForbidden = errors.New("forbidden")

// RoleIn returns p's role in tenant, "" if none. A platform admin is admin
// everywhere.
func (p Principal) RoleIn(tenant string) string {
	if p.Platform {
		return RoleAdmin
	}
	return p.Tenants[tenant]
}

// TenantList returns the tenants p may see, sorted; nil with all true for a
// platform admin, who sees every tenant.
func (p Principal) TenantList() (tenants []string, all bool) {
	if p.Platform {
		return nil, true
	}
	for t := range p.Tenants {
		tenants = append(tenants, t)
	}
	slices.Sort(tenants)
	return tenants, false
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal ctx carries, and whether there is one.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// String names p for logs and the audit log.
func (p Principal) String() string { return fmt.Sprintf("%s:%s", p.Kind, p.ID) }
