package store_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/dialtone-dev/dialtone/server/store"
)

func TestTokens(t *testing.T) {
	s, err := store.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	testTokens(t, s)
}

func TestPostgresTokens(t *testing.T) {
	_, dsn := postgresSchema(t)
	s := openPostgres(t, dsn)
	defer s.Close()
	testTokens(t, s)
}

func testTokens(t *testing.T, s store.Tokens) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	tok := store.Token{ID: "t1", Hash: bytes.Repeat([]byte{1}, 32), Role: "publisher", Models: []string{"dt100", "dt200"}, Created: now, Expires: now.Add(time.Hour)}
	if err := s.CreateToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateToken(ctx, store.Token{ID: "t2", Hash: tok.Hash, Role: "publisher"}); err == nil {
		t.Fatal("a second token with the same hash was stored")
	}
	if err := s.CreateToken(ctx, store.Token{ID: "t3", Hash: []byte{2}, Role: "publisher", Models: []string{"a,b"}}); err == nil {
		t.Fatal("a model with a comma was stored")
	}
	if err := s.CreateToken(ctx, store.Token{ID: "t4", Hash: []byte{4}, Role: "publisher", Description: "nul\x00"}); err == nil {
		t.Fatal("a description with a NUL byte was stored")
	}
	got, err := s.TokenByHash(ctx, tok.Hash)
	if err != nil || got.ID != "t1" || len(got.Models) != 2 || !got.Expires.Equal(tok.Expires) || !got.Revoked.IsZero() ||
		got.Created.Location() != time.UTC || !bytes.Equal(got.Hash, tok.Hash) || got.Role != "publisher" {
		t.Fatalf("TokenByHash = %+v, %v", got, err)
	}
	if _, err := s.TokenByHash(ctx, []byte{9}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown hash: %v", err)
	}
	if err := s.RevokeToken(ctx, "t1", now); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeToken(ctx, "t1", now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second revoke: %v", err)
	}
	got, _ = s.TokenByHash(ctx, tok.Hash)
	if !got.Revoked.Equal(now) {
		t.Fatalf("revoked = %v, want %v", got.Revoked, now)
	}
	// A token scoped to a tenant keeps it; TokenByID finds tokens by ID.
	scoped := store.Token{ID: "t5", Hash: bytes.Repeat([]byte{5}, 32), Tenant: "acme", Role: "operator", Created: now, Expires: now.Add(time.Hour)}
	if err := s.CreateToken(ctx, scoped); err != nil {
		t.Fatal(err)
	}
	if got, err := s.TokenByHash(ctx, scoped.Hash); err != nil || got.Tenant != "acme" || got.Role != "operator" || got.Models != nil {
		t.Fatalf("scoped TokenByHash = %+v, %v", got, err)
	}
	if got, err := s.TokenByID(ctx, "t5"); err != nil || got.Tenant != "acme" || !bytes.Equal(got.Hash, scoped.Hash) {
		t.Fatalf("TokenByID = %+v, %v", got, err)
	}
	if got, err := s.TokenByID(ctx, "t1"); err != nil || got.Tenant != "" || !got.Revoked.Equal(now) {
		t.Fatalf("TokenByID(t1) = %+v, %v", got, err)
	}
	if _, err := s.TokenByID(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
	if err := s.CreateToken(ctx, store.Token{ID: "t6", Hash: []byte{6}, Tenant: "a\x00", Role: "viewer"}); err == nil {
		t.Fatal("a tenant with a NUL byte was stored")
	}
	all, err := s.ListTokens(ctx)
	if err != nil || len(all) != 2 || all[1].Tenant != "acme" {
		t.Fatalf("ListTokens = %+v, %v", all, err)
	}
}
