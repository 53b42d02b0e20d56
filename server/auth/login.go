package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dialtone-dev/dialtone/server/store"
)

// SessionPrefix starts every session token, so that the API can tell one
// from an API token without a lookup.
const SessionPrefix = "dts_"

// sessionTokenLen is the length of a session token: the prefix and 32
// random bytes in hex.
const sessionTokenLen = len(SessionPrefix) + 64

// LoginRequest is one login attempt.
type LoginRequest struct {
	Name     string
	Password string
	// TOTP or Recovery is the second factor, at most one of them.
	TOTP     string
	Recovery string
	// Client is the caller's address (host:port or IP), for the limits.
	Client string
}

// Session is a successful login: Token is shown to its user only.
type Session struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
	UserID  string    `json:"user"`
}

// RequiresSecondFactor reports whether u must give a second factor to log
// in: platform admins, admins of any tenant, and anyone who enrolled one.
func RequiresSecondFactor(u store.User) bool {
	if u.Platform || u.TOTPSecret != "" {
		return true
	}
	for _, r := range u.Tenants {
		if r == RoleAdmin {
			return true
		}
	}
	return false
}

// Login checks a login attempt against the abuse limits, the password and
// the second factor and, if all pass, starts a session. Its refusals are
// ErrInvalidCredentials whatever was wrong (unknown names cost an argon2id
// verification like known ones), ErrSecondFactorRequired after a right
// password without a needed factor, *LimitedError before any hashing when
// the limits refuse, ErrBusy when too many hashes wait, and ErrInvalid
// for a request with both a TOTP and a recovery code.
func (s *Service) Login(ctx context.Context, req LoginRequest) (Session, error) {
	if req.TOTP != "" && req.Recovery != "" {
		return Session{}, fmt.Errorf("%w: give a TOTP code or a recovery code, not both", ErrInvalid)
	}
	name := strings.ToLower(req.Name)
	client := ClientKey(req.Client)
	now := s.now()
	if d, ok := s.limiter.Allow(name, client, now); !ok {
		return Session{}, &LimitedError{RetryAfter: d}
	}
	secondFactor := req.TOTP != "" || req.Recovery != ""
	if secondFactor {
		if d, ok := s.limiter.AllowSecondFactor(name, now); !ok {
			return Session{}, &LimitedError{RetryAfter: d}
		}
	}

	var u store.User
	err := store.ErrNotFound
	if ValidName(name) {
		u, err = s.users.UserByName(ctx, name)
	}
	if errors.Is(err, store.ErrNotFound) {
		// As long as a known name with a wrong password.
		if _, err := s.hasher.Verify(ctx, s.dummy, req.Password); err != nil {
			return Session{}, err
		}
		s.limiter.Failure(name, client, now)
		return Session{}, ErrInvalidCredentials
	}
	if err != nil {
		return Session{}, fmt.Errorf("auth: login: %w", err)
	}
	ok, err := s.hasher.Verify(ctx, u.PasswordHash, req.Password)
	if err != nil && !errors.Is(err, ErrBadHash) {
		return Session{}, err
	}
	if !ok || u.Disabled {
		s.limiter.Failure(name, client, now)
		return Session{}, ErrInvalidCredentials
	}

	if RequiresSecondFactor(u) {
		if !secondFactor || u.TOTPSecret == "" {
			return Session{}, ErrSecondFactorRequired
		}
		if err := s.checkSecondFactor(ctx, u, req, now); err != nil {
			if errors.Is(err, ErrInvalidCredentials) {
				s.limiter.SecondFactorFailure(name, now)
			}
			return Session{}, err
		}
	}
	s.limiter.Success(name, client)

	if s.hasher.NeedsRehash(u.PasswordHash) {
		if h, err := s.hasher.Hash(ctx, req.Password); err != nil {
			s.log.Warn("rehashing password", "user", u.ID, "err", err)
		} else if err := s.users.SetPasswordHash(ctx, u.ID, h); err != nil {
			s.log.Warn("storing rehashed password", "user", u.ID, "err", err)
		}
	}
	return s.startSession(ctx, u, now, "password")
}

func (s *Service) checkSecondFactor(ctx context.Context, u store.User, req LoginRequest, now time.Time) error {
	if req.TOTP != "" {
		step, ok := matchTOTP(u.TOTPSecret, req.TOTP, now)
		if !ok {
			return ErrInvalidCredentials
		}
		err := s.users.AdvanceTOTPStep(ctx, u.ID, step)
		if errors.Is(err, store.ErrConflict) {
			s.log.Warn("replayed totp code refused", "user", u.ID)
			return ErrInvalidCredentials
		}
		if err != nil {
			return fmt.Errorf("auth: login: %w", err)
		}
		return nil
	}
	err := s.users.UseRecoveryCode(ctx, u.ID, recoveryHash(req.Recovery))
	if errors.Is(err, store.ErrNotFound) {
		return ErrInvalidCredentials
	}
	if err != nil {
		return fmt.Errorf("auth: login: %w", err)
	}
	s.log.Info("recovery code used", "user", u.ID)
	return nil
}

func (s *Service) startSession(ctx context.Context, u store.User, now time.Time, method string) (Session, error) {
	secret, err := randomHex(32)
	if err != nil {
		return Session{}, err
	}
	id, err := randomHex(8)
	if err != nil {
		return Session{}, err
	}
	token := SessionPrefix + secret
	h := sha256.Sum256([]byte(token))
	now = now.UTC().Truncate(time.Microsecond)
	se := store.Session{ID: id, Hash: h[:], UserID: u.ID, Method: method, Created: now, Expires: now.Add(s.ttl)}
	if err := s.users.CreateSession(ctx, se); err != nil {
		return Session{}, fmt.Errorf("auth: starting session: %w", err)
	}
	s.log.Info("login", "user", u.ID, "session", id, "method", method)
	return Session{Token: token, Expires: se.Expires, UserID: u.ID}, nil
}

func sessionHash(token string) ([]byte, bool) {
	if len(token) != sessionTokenLen || !strings.HasPrefix(token, SessionPrefix) {
		return nil, false
	}
	if _, err := hex.DecodeString(token[len(SessionPrefix):]); err != nil {
		return nil, false
	}
	h := sha256.Sum256([]byte(token))
	return h[:], true
}

// AuthenticateSession returns the principal a session token stands for:
// its user with the user's current memberships. ErrInvalidSession when
// the token is unknown, expired or revoked, or its user disabled.
func (s *Service) AuthenticateSession(ctx context.Context, token string) (Principal, error) {
	h, ok := sessionHash(token)
	if !ok {
		return Principal{}, ErrInvalidSession
	}
	se, err := s.users.SessionByHash(ctx, h)
	if errors.Is(err, store.ErrNotFound) {
		return Principal{}, ErrInvalidSession
	}
	if err != nil {
		return Principal{}, fmt.Errorf("auth: session: %w", err)
	}
	if !se.Revoked.IsZero() || !s.now().Before(se.Expires) {
		return Principal{}, ErrInvalidSession
	}
	u, err := s.users.UserByID(ctx, se.UserID)
	if errors.Is(err, store.ErrNotFound) {
		return Principal{}, ErrInvalidSession
	}
	if err != nil {
		return Principal{}, fmt.Errorf("auth: session: %w", err)
	}
	if u.Disabled {
		return Principal{}, ErrInvalidSession
	}
	return Principal{Kind: KindSession, ID: u.ID, Platform: u.Platform, Tenants: u.Tenants}, nil
}

// Logout ends the session of token; ErrInvalidSession when there is no
// valid one.
func (s *Service) Logout(ctx context.Context, token string) error {
	h, ok := sessionHash(token)
	if !ok {
		return ErrInvalidSession
	}
	err := s.users.RevokeSession(ctx, h, s.now().UTC())
	if errors.Is(err, store.ErrNotFound) {
		return ErrInvalidSession
	}
	return err
}
