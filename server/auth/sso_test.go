package auth_test

import (
	"context"
	"errors"
	"testing"

	"github.com/dialtone-dev/dialtone/server/auth"
	"github.com/dialtone-dev/dialtone/server/auth/oidc"
	"github.com/dialtone-dev/dialtone/server/store"
)

func TestSSO(t *testing.T) {
	forEachStore(t, func(t *testing.T, users store.Users) {
		ctx := context.Background()
		s, _ := newService(t, users)
		vera := mustCreate(t, s, platform, auth.NewUser{Name: "vera", Tenants: map[string]string{"acme": auth.RoleViewer}})
		adam := mustCreate(t, s, platform, auth.NewUser{Name: "adam", Tenants: map[string]string{"acme": auth.RoleAdmin}})
		const iss = "https://idp.example"
		if err := s.LinkIdentity(ctx, platform, vera.ID, auth.Identity{Issuer: iss, Subject: "v"}); err != nil {
			t.Fatal(err)
		}
		if err := s.LinkIdentity(ctx, platform, adam.ID, auth.Identity{Issuer: iss, Subject: "v"}); !errors.Is(err, auth.ErrUserExists) {
			t.Fatalf("linking a linked account: %v", err)
		}
		other := auth.Principal{Kind: auth.KindSession, ID: "x", Tenants: map[string]string{"beta": auth.RoleAdmin}}
		if err := s.LinkIdentity(ctx, other, adam.ID, auth.Identity{Issuer: iss, Subject: "a"}); !errors.Is(err, auth.ErrForbidden) {
			t.Fatalf("another tenant's admin linking: %v", err)
		}
		if err := s.LinkIdentity(ctx, platform, adam.ID, auth.Identity{Issuer: iss, Subject: "a"}); err != nil {
			t.Fatal(err)
		}

		tok, exp, err := s.IssueOIDCSession(ctx, oidc.Identity{Issuer: iss, Subject: "v", Email: "adam@example.com"})
		if err != nil || exp.IsZero() {
			t.Fatalf("viewer SSO: %v", err)
		}
		if p, err := s.AuthenticateSession(ctx, tok); err != nil || p.ID != vera.ID {
			t.Fatalf("SSO session: %+v, %v", p, err)
		}
		// The email is never the key; the issuer is part of it.
		for _, id := range []oidc.Identity{{Issuer: iss, Subject: "nobody", Email: "vera@example.com"}, {Issuer: "https://other.example", Subject: "v"}} {
			if _, _, err := s.IssueOIDCSession(ctx, id); !errors.Is(err, oidc.ErrUnknownIdentity) {
				t.Errorf("IssueOIDCSession(%+v) = %v, want ErrUnknownIdentity", id, err)
			}
		}
		// An admin needs the provider's MFA.
		if _, _, err := s.IssueOIDCSession(ctx, oidc.Identity{Issuer: iss, Subject: "a", AMR: []string{"pwd"}}); !errors.Is(err, oidc.ErrSecondFactor) {
			t.Fatalf("admin SSO without MFA: %v", err)
		}
		if _, _, err := s.IssueOIDCSession(ctx, oidc.Identity{Issuer: iss, Subject: "a", AMR: []string{"pwd", "otp"}}); err != nil {
			t.Fatalf("admin SSO with MFA: %v", err)
		}
		// Unlinked, or disabled: refused.
		if err := s.UnlinkIdentity(ctx, platform, adam.ID, auth.Identity{Issuer: iss, Subject: "v"}); !errors.Is(err, auth.ErrNoUser) {
			t.Fatalf("unlinking another user's account: %v", err)
		}
		if err := s.UnlinkIdentity(ctx, platform, adam.ID, auth.Identity{Issuer: iss, Subject: "a"}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.IssueOIDCSession(ctx, oidc.Identity{Issuer: iss, Subject: "a", AMR: []string{"mfa"}}); !errors.Is(err, oidc.ErrUnknownIdentity) {
			t.Fatalf("after unlinking: %v", err)
		}
		if err := users.SetDisabled(ctx, vera.ID, true); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.IssueOIDCSession(ctx, oidc.Identity{Issuer: iss, Subject: "v"}); !errors.Is(err, oidc.ErrUnknownIdentity) {
			t.Fatalf("disabled user: %v", err)
		}
	})
}
