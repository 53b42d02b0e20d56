package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dialtone-dev/dialtone/server/auth/oidc"
	"github.com/dialtone-dev/dialtone/server/store"
)

// Single sign-on: an admin links a provider account (issuer and subject,
// never an email address) to a user; a verified OIDC login of that account
// then gets the same kind of session a password login does.

// IssueOIDCSession implements the API's SessionIssuer: a session for the
// user id is linked to. Identities linked to nobody or to a disabled user
// are refused (oidc.ErrUnknownIdentity); users who must give a second
// factor get a session only if the provider asserts MFA
// (oidc.ErrSecondFactor otherwise).
func (s *Service) IssueOIDCSession(ctx context.Context, id oidc.Identity) (string, time.Time, error) {
	u, err := s.users.UserByIdentity(ctx, id.Issuer, id.Subject)
	if errors.Is(err, store.ErrNotFound) || (err == nil && u.Disabled) {
		return "", time.Time{}, oidc.ErrUnknownIdentity
	}
	if err != nil {
		return "", time.Time{}, fmt.Errorf("auth: sso: %w", err)
	}
	if RequiresSecondFactor(u) && !id.MFA() {
		return "", time.Time{}, oidc.ErrSecondFactor
	}
	se, err := s.startSession(ctx, u, s.now(), "oidc")
	if err != nil {
		return "", time.Time{}, err
	}
	return se.Token, se.Expires, nil
}

// Identity is a single sign-on account: its provider and its subject there.
type Identity struct {
	Issuer  string `json:"issuer"`
	Subject string `json:"subject"`
}

// LinkIdentity links a provider account to user id; actor must be able to
// manage the user (as for its password).
func (s *Service) LinkIdentity(ctx context.Context, actor Principal, id string, ident Identity) error {
	u, err := s.user(ctx, id)
	if err != nil {
		return err
	}
	if err := mayManage(actor, u); err != nil {
		return err
	}
	if ident.Issuer == "" || ident.Subject == "" || len(ident.Issuer) > 1024 || len(ident.Subject) > 1024 {
		return fmt.Errorf("%w: issuer and subject are required", ErrInvalid)
	}
	if err := s.users.LinkIdentity(ctx, u.ID, ident.Issuer, ident.Subject); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("%w: that account is linked to a user already", ErrUserExists)
		}
		return err
	}
	s.log.Info("sso identity linked", "user", u.ID, "issuer", ident.Issuer, "subject", ident.Subject, "by", actor.String())
	return nil
}

// UnlinkIdentity removes the link of a provider account from user id.
func (s *Service) UnlinkIdentity(ctx context.Context, actor Principal, id string, ident Identity) error {
	u, err := s.user(ctx, id)
	if err != nil {
		return err
	}
	if err := mayManage(actor, u); err != nil {
		return err
	}
	linked, err := s.users.UserByIdentity(ctx, ident.Issuer, ident.Subject)
	if errors.Is(err, store.ErrNotFound) || (err == nil && linked.ID != u.ID) {
		return fmt.Errorf("%w: %s has no such linked account", ErrNoUser, id)
	}
	if err != nil {
		return err
	}
	return s.users.UnlinkIdentity(ctx, ident.Issuer, ident.Subject)
}
