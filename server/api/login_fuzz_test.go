package api

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/auth"
)

// Every decoder of login.go refuses with ErrForm, and what it accepts
// keeps its documented bounds.

func FuzzDecodeLoginBody(f *testing.F) {
	for _, s := range []string{`{"name":"vera","password":"pw"}`, `{"name":"vera","password":"pw","totp":"123456"}`,
		`{"name":"vera","password":"pw","recovery":"abcd-efgh"}`, `{"name":"vera","password":"pw","totp":"1","recovery":"x"}`,
		`{"name":"vera","password":"pw"}{}`, `{"x":1}`, `[]`, ``, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		lb, err := DecodeLoginBody(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrForm) {
				t.Fatalf("error without ErrForm: %v", err)
			}
			return
		}
		if lb.Name == "" || len(lb.Name) > 256 || lb.Password == "" || len(lb.Password) > auth.MaxPasswordLen ||
			(lb.TOTP != "" && lb.Recovery != "") || (lb.TOTP != "" && (len(lb.TOTP) != 6 || !isDigits(lb.TOTP))) || len(lb.Recovery) > 64 {
			t.Fatalf("accepted %+v", lb)
		}
	})
}

func FuzzDecodeUserBody(f *testing.F) {
	for _, s := range []string{`{"name":"olga","password":"a long enough password","tenants":{"acme":"operator"}}`,
		`{"name":"pat","password":"a long enough password","platform":true}`, `{"name":"olga","password":"short"}`,
		`{"name":"olga","password":"a long enough password","tenants":{"acme":"root"}}`, `{}`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ub, err := DecodeUserBody(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrForm) {
				t.Fatalf("error without ErrForm: %v", err)
			}
			return
		}
		if !auth.ValidName(strings.ToLower(ub.Name)) || auth.CheckPassword(ub.Password) != nil || len(ub.Tenants) > maxTenants {
			t.Fatalf("accepted %+v", ub)
		}
		for tn, r := range ub.Tenants {
			if !wire.ValidID(tn) || !auth.ValidRole(r) {
				t.Fatalf("accepted membership %q: %q", tn, r)
			}
		}
	})
}

func FuzzDecodeRoleBody(f *testing.F) {
	for _, s := range []string{`{"role":"viewer"}`, `{"role":"admin"}`, `{"role":"king"}`, `{"role":"viewer","x":1}`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rb, err := DecodeRoleBody(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrForm) {
				t.Fatalf("error without ErrForm: %v", err)
			}
			return
		}
		if !auth.ValidRole(rb.Role) {
			t.Fatalf("accepted role %q", rb.Role)
		}
	})
}

func FuzzDecodePasswordBody(f *testing.F) {
	for _, s := range []string{`{"password":"a long enough password"}`, `{"password":"a long enough password","current":"old one"}`,
		`{"password":"short"}`, `{"password":"a long enough password","x":1}`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		pb, err := DecodePasswordBody(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrForm) {
				t.Fatalf("error without ErrForm: %v", err)
			}
			return
		}
		if auth.CheckPassword(pb.Password) != nil || len(pb.Current) > auth.MaxPasswordLen {
			t.Fatalf("accepted %+v", pb)
		}
	})
}

func FuzzDecodeEnrollBody(f *testing.F) {
	for _, s := range []string{``, `{}`, ` {} `, `{"x":1}`, `[]`, `{}{}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := DecodeEnrollBody(bytes.NewReader(b)); err != nil && !errors.Is(err, ErrForm) {
			t.Fatalf("error without ErrForm: %v", err)
		}
	})
}

func FuzzDecodeIdentityBody(f *testing.F) {
	for _, s := range []string{`{"issuer":"https://idp.example","subject":"248289761001"}`, `{"issuer":"idp","subject":"x"}`,
		`{"issuer":"https://idp.example"}`, `{"issuer":"https://idp.example","subject":"x","email":"a@b"}`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ib, err := DecodeIdentityBody(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrForm) {
				t.Fatalf("error without ErrForm: %v", err)
			}
			return
		}
		if ib.Issuer == "" || ib.Subject == "" || len(ib.Issuer) > 1024 || len(ib.Subject) > 255 {
			t.Fatalf("accepted %+v", ib)
		}
	})
}
