package auth

import (
	"fmt"
	"slices"
)

// Permission names one thing the API lets a principal do. Every API route
// names exactly one (server/api's routes table); the policy below says
// which roles hold it.
type Permission string

// Permissions.
const (
	DevicesRead     Permission = "devices.read"     // list and read devices and their events
	DevicesCommand  Permission = "devices.command"  // send a device a one-off command
	DevicesEnroll   Permission = "devices.enroll"   // let devices enroll: tokens, serials, EK approvals
	RolloutsWrite   Permission = "rollouts.write"   // set a device's desired version
	AlertsRead      Permission = "alerts.read"      // list security alerts
	FleetRead       Permission = "fleet.read"       // the fleet summary
	FirmwarePublish Permission = "firmware.publish" // publish firmware, read delegations (model-scoped)
	TUFRead         Permission = "tuf.read"         // the repository's status (model-scoped)
	TUFPush         Permission = "tuf.push"         // push signed TUF metadata (keys, roots, delegations)
	TokensManage    Permission = "tokens.manage"    // create, list and revoke API tokens
	UsersManage     Permission = "users.manage"     // create, list and change operators
	AuditRead       Permission = "audit.read"       // read the audit log of a tenant
	AuditVerify     Permission = "audit.verify"     // read the whole chain's head, to verify it
	TenantsManage   Permission = "tenants.manage"   // create and change tenants
	// ConfigPublish: publish a device's or group's configuration (its SIP
	// profile) as a TUF target of config/<tenant>/..., signed by the
	// config role's key; the tenant is the one in the target path.
	ConfigPublish Permission = "config.publish"
	// SIPManage: set and remove devices' SIP passwords. Their own
	// permission, not devices.command: a SIP password is a secret the
	// server releases to phones, and who may set one is a separate call.
	SIPManage Permission = "sip.manage"
)

// Scope is where a permission applies.
type Scope int

const (
	// ScopeTenant: the permission is used on one tenant's things, and the
	// principal needs a role there that holds it.
	ScopeTenant Scope = iota
	// ScopeModels: the permission is used on the platform's firmware,
	// limited by Principal.Models; any role the principal holds in any
	// tenant (or outside every tenant, as a CI token) that has it counts.
	ScopeModels
	// ScopePlatform: only a platform admin has it.
	ScopePlatform
)

// policy is the role → permissions table, and each permission's scope.
var (
	viewerPerms    = []Permission{DevicesRead, AlertsRead, FleetRead}
	operatorPerms  = append(slices.Clone(viewerPerms), DevicesCommand, DevicesEnroll, RolloutsWrite, ConfigPublish, SIPManage)
	publisherPerms = []Permission{FirmwarePublish, TUFRead}
	adminPerms     = append(slices.Clone(operatorPerms), TokensManage, UsersManage, AuditRead)

	policy = map[string][]Permission{
		RoleViewer:    viewerPerms,
		RoleOperator:  operatorPerms,
		RolePublisher: publisherPerms,
		RoleAdmin:     adminPerms,
	}

	scopes = map[Permission]Scope{
		DevicesRead: ScopeTenant, DevicesCommand: ScopeTenant, DevicesEnroll: ScopeTenant, RolloutsWrite: ScopeTenant,
		AlertsRead: ScopeTenant, FleetRead: ScopeTenant, TokensManage: ScopeTenant,
		UsersManage: ScopeTenant, AuditRead: ScopeTenant, ConfigPublish: ScopeTenant, SIPManage: ScopeTenant,
		FirmwarePublish: ScopeModels, TUFRead: ScopeModels,
		TUFPush: ScopePlatform, TenantsManage: ScopePlatform, AuditVerify: ScopePlatform,
	}
)

// Permissions lists every permission, sorted.
func Permissions() []Permission {
	out := make([]Permission, 0, len(scopes))
	for p := range scopes {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// ValidPermission reports whether perm is a permission of the policy.
func ValidPermission(perm Permission) bool {
	_, ok := scopes[perm]
	return ok
}

// ScopeOf returns where perm applies.
func ScopeOf(perm Permission) Scope { return scopes[perm] }

// RoleHas reports whether role holds perm (in the tenant where the role is
// held). A platform admin holds every permission everywhere.
func RoleHas(role string, perm Permission) bool {
	return slices.Contains(policy[role], perm)
}

// Authorize decides whether p may use perm on tenant. tenant "" means a
// platform-level action: firmware and TUF (ScopeModels, ScopePlatform).
// Refusals wrap ErrForbidden.
//
// The empty tenant in Principal.Tenants stands for a role held outside any
// tenant: an API token made for CI before tokens had tenants, or without
// one. It counts for ScopeModels permissions only.
func Authorize(p Principal, perm Permission, tenant string) error {
	scope, ok := scopes[perm]
	if !ok {
		return fmt.Errorf("%w: unknown permission %q", ErrForbidden, perm)
	}
	if p.Platform {
		return nil
	}
	switch scope {
	case ScopePlatform:
		return fmt.Errorf("%w: %s is for platform admins", ErrForbidden, perm)
	case ScopeModels:
		for _, role := range p.Tenants {
			if RoleHas(role, perm) {
				return nil
			}
		}
		return fmt.Errorf("%w: no role of %s has %s", ErrForbidden, p, perm)
	}
	if tenant == "" {
		return fmt.Errorf("%w: %s needs a tenant", ErrForbidden, perm)
	}
	role := p.Tenants[tenant]
	if role == "" {
		return fmt.Errorf("%w: %s has no role in tenant %s", ErrForbidden, p, tenant)
	}
	if !RoleHas(role, perm) {
		return fmt.Errorf("%w: role %s may not %s", ErrForbidden, role, perm)
	}
	return nil
}

// TenantsWith returns the tenants in which p holds perm, sorted, or all
// true for a platform admin, who holds it in every tenant. The empty tenant
// is never among them.
func TenantsWith(p Principal, perm Permission) (tenants []string, all bool) {
	if p.Platform {
		return nil, true
	}
	for t, role := range p.Tenants {
		if t != "" && RoleHas(role, perm) {
			tenants = append(tenants, t)
		}
	}
	slices.Sort(tenants)
	return tenants, false
}

// CanGrant decides whether p may give a new API token role in tenant
// ("" for none). A tenant admin (TokensManage there) may mint viewer,
// operator and admin tokens of that tenant; publisher tokens publish the
// platform's firmware and tenantless tokens belong to no tenant, so only a
// platform admin mints those.
func CanGrant(p Principal, tenant, role string) error {
	if !ValidRole(role) {
		return fmt.Errorf("%w: unknown role %q", ErrForbidden, role)
	}
	if p.Platform {
		return nil
	}
	if tenant == "" || role == RolePublisher {
		return fmt.Errorf("%w: only a platform admin makes publisher or tenantless tokens", ErrForbidden)
	}
	return Authorize(p, TokensManage, tenant)
}
