package auth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/store"
)

// Errors of the Service. Login's refusals are deliberately alike: they
// never say whether the name exists.
var (
	// ErrInvalidCredentials: wrong name, password, TOTP code or recovery
	// code, a replayed TOTP code, or a disabled user.
	ErrInvalidCredentials = errors.New("invalid name, password or second factor")
	// ErrSecondFactorRequired: the password was right but this user must
	// also give a TOTP code or a recovery code (admins always; anyone who
	// enrolled one). An admin without an enrolled factor cannot log in
	// until another admin enrolls one for them.
	ErrSecondFactorRequired = errors.New("a second factor is required: give a TOTP code or a recovery code (an admin without one must have one enrolled)")
	// ErrInvalidSession: an unknown, expired or revoked session token, or
	// one of a disabled user.
	ErrInvalidSession = errors.New("invalid, expired or revoked session")
	// ErrLimited is wrapped by *LimitedError.
	ErrLimited = errors.New("too many attempts")
	// ErrInvalid is wrapped by the refusals of malformed input: a bad name,
	// tenant or role, or a password the policy refuses (which also wraps
	// ErrWeakPassword).
	ErrInvalid = errors.New("invalid request")
	// ErrUserExists: the name is taken.
	ErrUserExists = errors.New("a user with this name exists")
	// ErrNoUser: no user has this ID (only said to callers who may manage
	// users, never at login).
	ErrNoUser = errors.New("no such user")
)

// LimitedError is a refusal of the abuse policy: retry after RetryAfter.
type LimitedError struct{ RetryAfter time.Duration }

func (e *LimitedError) Error() string {
	return fmt.Sprintf("%v: retry in %s", ErrLimited, e.RetryAfter.Round(time.Second))
}

// Unwrap makes errors.Is(err, ErrLimited) hold.
func (e *LimitedError) Unwrap() error { return ErrLimited }

// Service keeps operators: their passwords, second factors, memberships
// and sessions. It implements the API's session authentication.
type Service struct {
	users   store.Users
	hasher  *Hasher
	limiter *Limiter
	now     func() time.Time
	ttl     time.Duration
	issuer  string
	log     *slog.Logger
	// dummy is a hash of a random password, verified for unknown names
	// so that they take as long as known ones.
	dummy string

	params               Params
	hashers, hashWaiters int
	policy               LimitPolicy
}

// Option configures New.
type Option func(*Service) error

// WithParams sets the argon2id parameters of new hashes (DefaultParams).
func WithParams(p Params) Option {
	return func(s *Service) error { s.params = p; return p.valid() }
}

// WithHashConcurrency sets how many password hashes run at once (2) and
// how many more may wait for a turn (32) before logins get ErrBusy.
func WithHashConcurrency(running, waiting int) Option {
	return func(s *Service) error { s.hashers, s.hashWaiters = running, waiting; return nil }
}

// WithLimitPolicy sets the login abuse policy (DefaultLimitPolicy).
func WithLimitPolicy(p LimitPolicy) Option {
	return func(s *Service) error { s.policy = p; return nil }
}

// WithSessionTTL sets how long a login session lasts (12 hours).
func WithSessionTTL(d time.Duration) Option {
	return func(s *Service) error {
		if d <= 0 {
			return errors.New("auth: session lifetime must be positive")
		}
		s.ttl = d
		return nil
	}
}

// WithClock sets the clock, for tests.
func WithClock(now func() time.Time) Option {
	return func(s *Service) error { s.now = now; return nil }
}

// WithLogger sets the logger (discard).
func WithLogger(l *slog.Logger) Option {
	return func(s *Service) error { s.log = l; return nil }
}

// WithIssuer sets the issuer authenticator apps show ("dialtone").
func WithIssuer(issuer string) Option {
	return func(s *Service) error { s.issuer = issuer; return nil }
}

// New returns the service on users.
func New(users store.Users, opts ...Option) (*Service, error) {
	if users == nil {
		return nil, errors.New("auth: a user store is required")
	}
	s := &Service{users: users, now: time.Now, ttl: 12 * time.Hour, issuer: "dialtone", log: slog.New(slog.DiscardHandler),
		params: DefaultParams, hashers: 2, hashWaiters: 32, policy: DefaultLimitPolicy}
	for _, o := range opts {
		if err := o(s); err != nil {
			return nil, err
		}
	}
	h, err := NewHasher(s.params, s.hashers, s.hashWaiters)
	if err != nil {
		return nil, err
	}
	s.hasher, s.limiter = h, NewLimiter(s.policy)
	if s.dummy, err = h.Unmatchable(); err != nil {
		return nil, fmt.Errorf("auth: dummy hash: %w", err)
	}
	return s, nil
}

// Hasher returns the service's password hasher (for its counters).
func (s *Service) Hasher() *Hasher { return s.hasher }

// UserInfo is a user as shown to those who manage users: never a hash or
// a secret.
type UserInfo struct {
	ID            string            `json:"id"`
	Name          string            `json:"name"`
	Platform      bool              `json:"platform,omitempty"`
	Tenants       map[string]string `json:"tenants"`
	TOTP          bool              `json:"totp"`
	RecoveryCodes int               `json:"recovery_codes"`
	Disabled      bool              `json:"disabled,omitempty"`
	Created       time.Time         `json:"created"`
}

func userInfo(u store.User) UserInfo {
	t := maps.Clone(u.Tenants)
	if t == nil {
		t = map[string]string{}
	}
	return UserInfo{ID: u.ID, Name: u.Name, Platform: u.Platform, Tenants: t, TOTP: u.TOTPSecret != "",
		RecoveryCodes: u.RecoveryCodes, Disabled: u.Disabled, Created: u.Created}
}

// ValidName reports whether s may be a login name: 1 to 64 of a-z, 0-9,
// and . _ - @ after the first character. Names are lowercase; Login
// lowercases what it is given.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-' || c == '@'):
		default:
			return false
		}
	}
	return true
}

func checkMembership(tenant, role string) error {
	if !wire.ValidID(tenant) {
		return fmt.Errorf("%w: bad tenant %q", ErrInvalid, tenant)
	}
	if !ValidRole(role) {
		return fmt.Errorf("%w: role %q (want one of %s)", ErrInvalid, role, strings.Join(Roles, ", "))
	}
	return nil
}

// mayGrant: giving a role in tenant (or taking one) takes UsersManage
// there; the publisher role, which publishes the platform's firmware, takes
// a platform admin, as for API tokens (CanGrant).
func mayGrant(actor Principal, tenant, role string) error {
	if role == RolePublisher && !actor.Platform {
		return fmt.Errorf("%w: only a platform admin makes publishers", ErrForbidden)
	}
	return Authorize(actor, UsersManage, tenant)
}

// mayManage: a user's password and second factor are managed by the user,
// a platform admin, or whoever has UsersManage in every tenant the user
// belongs to (and the user is no platform admin).
func mayManage(actor Principal, u store.User) error {
	if actor.Platform || (actor.Kind == KindSession && actor.ID == u.ID) {
		return nil
	}
	if !u.Platform && len(u.Tenants) > 0 {
		var err error
		for t := range u.Tenants {
			err = errors.Join(err, Authorize(actor, UsersManage, t))
		}
		if err == nil {
			return nil
		}
	}
	return fmt.Errorf("%w: managing user %s takes %s in each of its tenants", ErrForbidden, u.ID, UsersManage)
}

// NewUser is what CreateUser needs.
type NewUser struct {
	Name     string            `json:"name"`
	Password string            `json:"password"`
	Platform bool              `json:"platform,omitempty"`
	Tenants  map[string]string `json:"tenants,omitempty"`
}

// CreateUser creates a user on behalf of actor, who must be admin in each
// tenant the user gets a role in (a platform admin to make a platform
// admin or a user in no tenant).
func (s *Service) CreateUser(ctx context.Context, actor Principal, nu NewUser) (UserInfo, error) {
	nu.Name = strings.ToLower(nu.Name)
	if !ValidName(nu.Name) {
		return UserInfo{}, fmt.Errorf("%w: bad name %q", ErrInvalid, nu.Name)
	}
	if err := CheckPassword(nu.Password); err != nil {
		return UserInfo{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if (nu.Platform || len(nu.Tenants) == 0) && !actor.Platform {
		return UserInfo{}, fmt.Errorf("%w: only a platform admin makes platform admins or users in no tenant", ErrForbidden)
	}
	for t, r := range nu.Tenants {
		if err := checkMembership(t, r); err != nil {
			return UserInfo{}, err
		}
		if err := mayGrant(actor, t, r); err != nil {
			return UserInfo{}, err
		}
	}
	hash, err := s.hasher.Hash(ctx, nu.Password)
	if err != nil {
		return UserInfo{}, err
	}
	id, err := randomHex(8)
	if err != nil {
		return UserInfo{}, err
	}
	u := store.User{ID: "u" + id, Name: nu.Name, PasswordHash: hash, Platform: nu.Platform, Tenants: maps.Clone(nu.Tenants),
		Created: s.now().UTC().Truncate(time.Microsecond)}
	if err := s.users.CreateUser(ctx, u); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return UserInfo{}, fmt.Errorf("%w: %s", ErrUserExists, nu.Name)
		}
		return UserInfo{}, err
	}
	s.log.Info("user created", "id", u.ID, "name", u.Name, "platform", u.Platform, "tenants", u.Tenants, "by", actor.String())
	if u.Tenants == nil {
		u.Tenants = map[string]string{}
	}
	return userInfo(u), nil
}

// ListUsers returns the users actor may see: all for a platform admin;
// for others the members of the tenants they are admin of, showing only
// those memberships.
func (s *Service) ListUsers(ctx context.Context, actor Principal) ([]UserInfo, error) {
	us, err := s.users.ListUsers(ctx)
	if err != nil {
		return nil, err
	}
	out := []UserInfo{}
	for _, u := range us {
		info := userInfo(u)
		if !actor.Platform {
			maps.DeleteFunc(info.Tenants, func(t, _ string) bool { return Authorize(actor, UsersManage, t) != nil })
			if len(info.Tenants) == 0 && u.ID != actor.ID {
				continue
			}
		}
		out = append(out, info)
	}
	return out, nil
}

func (s *Service) user(ctx context.Context, id string) (store.User, error) {
	u, err := s.users.UserByID(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.User{}, fmt.Errorf("%w: %s", ErrNoUser, id)
	}
	return u, err
}

// SetRole gives user id role in tenant; actor must be admin there.
func (s *Service) SetRole(ctx context.Context, actor Principal, id, tenant, role string) (UserInfo, error) {
	if err := checkMembership(tenant, role); err != nil {
		return UserInfo{}, err
	}
	if err := mayGrant(actor, tenant, role); err != nil {
		return UserInfo{}, err
	}
	if err := s.users.SetMembership(ctx, id, tenant, role); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return UserInfo{}, fmt.Errorf("%w: %s", ErrNoUser, id)
		}
		return UserInfo{}, err
	}
	s.log.Info("role granted", "user", id, "tenant", tenant, "role", role, "by", actor.String())
	u, err := s.user(ctx, id)
	return userInfo(u), err
}

// RemoveRole takes user id out of tenant; actor must be admin there.
func (s *Service) RemoveRole(ctx context.Context, actor Principal, id, tenant string) error {
	if !wire.ValidID(tenant) {
		return fmt.Errorf("%w: bad tenant %q", ErrInvalid, tenant)
	}
	if err := mayGrant(actor, tenant, ""); err != nil {
		return err
	}
	if err := s.users.RemoveMembership(ctx, id, tenant); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("%w: %s in tenant %s", ErrNoUser, id, tenant)
		}
		return err
	}
	s.log.Info("role revoked", "user", id, "tenant", tenant, "by", actor.String())
	return nil
}

// EnrollTOTP gives user id a new TOTP secret and recovery codes,
// replacing any it had, and returns them: they are shown once.
func (s *Service) EnrollTOTP(ctx context.Context, actor Principal, id string) (Enrollment, error) {
	u, err := s.user(ctx, id)
	if err != nil {
		return Enrollment{}, err
	}
	if err := mayManage(actor, u); err != nil {
		return Enrollment{}, err
	}
	if d, ok := s.limiter.AllowEnrollment(u.ID, s.now()); !ok {
		return Enrollment{}, &LimitedError{RetryAfter: d}
	}
	e, hashes, err := newTOTP(s.issuer, u.Name)
	if err != nil {
		return Enrollment{}, err
	}
	if err := s.users.SetTOTP(ctx, u.ID, e.Secret, hashes); err != nil {
		return Enrollment{}, err
	}
	s.log.Info("totp enrolled", "user", u.ID, "by", actor.String())
	return e, nil
}

// PasswordChange sets a user's password. Current is required when users
// change their own password through a session, so that a stolen session
// cannot take the account over.
type PasswordChange struct {
	Password string `json:"password"`
	Current  string `json:"current,omitempty"`
	// Client is the caller's address, for the abuse limits.
	Client string `json:"-"`
}

// SetPassword sets user id's password and ends every session of the user.
func (s *Service) SetPassword(ctx context.Context, actor Principal, id string, pc PasswordChange) error {
	u, err := s.user(ctx, id)
	if err != nil {
		return err
	}
	if err := mayManage(actor, u); err != nil {
		return err
	}
	if err := CheckPassword(pc.Password); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if actor.Kind == KindSession && actor.ID == u.ID {
		client := ClientKey(pc.Client)
		now := s.now()
		if d, ok := s.limiter.Allow(u.Name, client, now); !ok {
			return &LimitedError{RetryAfter: d}
		}
		ok, err := s.hasher.Verify(ctx, u.PasswordHash, pc.Current)
		if err != nil {
			return err
		}
		if !ok {
			s.limiter.Failure(u.Name, client, now)
			return fmt.Errorf("%w: the current password is wrong", ErrInvalidCredentials)
		}
	}
	hash, err := s.hasher.Hash(ctx, pc.Password)
	if err != nil {
		return err
	}
	if err := s.users.SetPasswordHash(ctx, u.ID, hash); err != nil {
		return err
	}
	if err := s.users.RevokeUserSessions(ctx, u.ID, s.now().UTC()); err != nil {
		return err
	}
	s.log.Info("password set", "user", u.ID, "by", actor.String())
	return nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("auth: %w", err)
	}
	return hex.EncodeToString(b), nil
}
