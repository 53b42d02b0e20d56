package auth

import (
	"errors"
	"testing"
)

func TestAuthorize(t *testing.T) {
	acmeViewer := Principal{Kind: KindSession, ID: "v", Tenants: map[string]string{"acme": RoleViewer}}
	acmeOperator := Principal{Kind: KindSession, ID: "o", Tenants: map[string]string{"acme": RoleOperator, "beta": RoleViewer}}
	acmeAdmin := Principal{Kind: KindSession, ID: "a", Tenants: map[string]string{"acme": RoleAdmin}}
	ci := Principal{Kind: KindToken, ID: "ci", Tenants: map[string]string{"": RolePublisher}, Models: []string{"dt100"}}
	acmePublisher := Principal{Kind: KindToken, ID: "p", Tenants: map[string]string{"acme": RolePublisher}, Models: []string{"dt100"}}
	platform := Principal{Kind: KindBootstrap, ID: "bootstrap", Platform: true}
	for _, tc := range []struct {
		name   string
		p      Principal
		perm   Permission
		tenant string
		allow  bool
	}{
		{"viewer reads own tenant", acmeViewer, DevicesRead, "acme", true},
		{"viewer reads other tenant", acmeViewer, DevicesRead, "beta", false},
		{"viewer commands", acmeViewer, DevicesCommand, "acme", false},
		{"viewer tenantless read", acmeViewer, DevicesRead, "", false},
		{"operator commands own tenant", acmeOperator, DevicesCommand, "acme", true},
		{"operator rollouts own tenant", acmeOperator, RolloutsWrite, "acme", true},
		{"operator is viewer in beta", acmeOperator, DevicesCommand, "beta", false},
		{"operator reads beta", acmeOperator, AlertsRead, "beta", true},
		{"operator tokens", acmeOperator, TokensManage, "acme", false},
		{"operator publishes", acmeOperator, FirmwarePublish, "", false},
		{"admin tokens", acmeAdmin, TokensManage, "acme", true},
		{"admin users", acmeAdmin, UsersManage, "acme", true},
		{"admin audit", acmeAdmin, AuditRead, "acme", true},
		{"admin other tenant", acmeAdmin, DevicesRead, "beta", false},
		{"admin tenants", acmeAdmin, TenantsManage, "", false},
		{"admin tuf push", acmeAdmin, TUFPush, "", false},
		{"admin publishes", acmeAdmin, FirmwarePublish, "", false},
		{"ci publishes", ci, FirmwarePublish, "", true},
		{"ci tuf status", ci, TUFRead, "", true},
		{"ci devices", ci, DevicesRead, "", false},
		{"ci tuf push", ci, TUFPush, "", false},
		{"tenant publisher publishes", acmePublisher, FirmwarePublish, "", true},
		{"tenant publisher has no device access", acmePublisher, DevicesRead, "acme", false},
		{"platform everything", platform, TenantsManage, "", true},
		{"platform any tenant", platform, DevicesCommand, "zeta", true},
		{"platform tuf push", platform, TUFPush, "", true},
		{"unknown permission", platform, "nope", "", false},
		{"nobody", Principal{}, DevicesRead, "acme", false},
	} {
		err := Authorize(tc.p, tc.perm, tc.tenant)
		if (err == nil) != tc.allow {
			t.Errorf("%s: Authorize = %v, want allow %v", tc.name, err, tc.allow)
		}
		if err != nil && !errors.Is(err, ErrForbidden) {
			t.Errorf("%s: %v does not wrap ErrForbidden", tc.name, err)
		}
	}
}

// TestPolicyTable: every role's permissions exist and have a scope, roles
// nest as documented, and no tenant role holds a platform permission.
func TestPolicyTable(t *testing.T) {
	for role, perms := range policy {
		if !ValidRole(role) {
			t.Errorf("policy names unknown role %q", role)
		}
		for _, p := range perms {
			if !ValidPermission(p) {
				t.Errorf("role %s holds unknown permission %q", role, p)
			}
			if ScopeOf(p) == ScopePlatform {
				t.Errorf("tenant role %s holds platform permission %s", role, p)
			}
		}
	}
	for _, r := range Roles {
		if _, ok := policy[r]; !ok {
			t.Errorf("role %s has no policy", r)
		}
	}
	for _, p := range viewerPerms {
		if !RoleHas(RoleOperator, p) || !RoleHas(RoleAdmin, p) {
			t.Errorf("%s: viewer has it, operator or admin not", p)
		}
	}
	for _, p := range operatorPerms {
		if !RoleHas(RoleAdmin, p) {
			t.Errorf("%s: operator has it, admin not", p)
		}
	}
	for _, p := range []Permission{DevicesRead, AlertsRead, FleetRead, DevicesCommand} {
		if RoleHas(RolePublisher, p) {
			t.Errorf("publisher has device permission %s", p)
		}
	}
	if len(Permissions()) != len(scopes) {
		t.Fatal("Permissions() incomplete")
	}
}

func TestTenantsWith(t *testing.T) {
	p := Principal{Tenants: map[string]string{"b": RoleViewer, "a": RoleOperator, "c": RolePublisher, "": RolePublisher}}
	ts, all := TenantsWith(p, DevicesRead)
	if all || len(ts) != 2 || ts[0] != "a" || ts[1] != "b" {
		t.Fatalf("TenantsWith(devices.read) = %v %v", ts, all)
	}
	if ts, _ := TenantsWith(p, DevicesCommand); len(ts) != 1 || ts[0] != "a" {
		t.Fatalf("TenantsWith(devices.command) = %v", ts)
	}
	if _, all := TenantsWith(Principal{Platform: true}, DevicesRead); !all {
		t.Fatal("platform admin does not see every tenant")
	}
}

func TestCanGrant(t *testing.T) {
	admin := Principal{Tenants: map[string]string{"acme": RoleAdmin, "beta": RoleOperator}}
	for _, tc := range []struct {
		p            Principal
		tenant, role string
		allow        bool
	}{
		{admin, "acme", RoleViewer, true},
		{admin, "acme", RoleAdmin, true},
		{admin, "acme", RolePublisher, false},
		{admin, "", RolePublisher, false},
		{admin, "beta", RoleViewer, false},
		{admin, "zeta", RoleViewer, false},
		{admin, "acme", "root", false},
		{Principal{Platform: true}, "", RolePublisher, true},
		{Principal{Platform: true}, "zeta", RoleAdmin, true},
	} {
		if err := CanGrant(tc.p, tc.tenant, tc.role); (err == nil) != tc.allow {
			t.Errorf("CanGrant(%q, %q) = %v, want allow %v", tc.tenant, tc.role, err, tc.allow)
		}
	}
}
