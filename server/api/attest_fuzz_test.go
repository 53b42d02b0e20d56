package api

import (
	"bytes"
	"errors"
	"testing"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/store"
)

func FuzzDecodeEnrollRequest(f *testing.F) {
	for _, s := range []string{`{"device":"p1","model":"dt100","ek_public":"AAE=","ak_public":"AAE=","token":"dte_x"}`,
		`{"device":"p1","model":"dt100","ek_public":"AAE=","ak_public":"AAE=","ek_cert":"MIIB"}`,
		`{"device":"../x","model":"m","ek_public":"AA==","ak_public":"AA=="}`, `{"device":"p1"}`, `{}`, `[]`, ``, `{"x":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := DecodeEnrollRequest(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrForm) {
				t.Fatalf("error without ErrForm: %v", err)
			}
			return
		}
		if !wire.ValidID(req.Device) || req.Model == "" || len(req.EKPublic) == 0 || len(req.AKPublic) == 0 || len(b) > MaxJSONBodyBytes {
			t.Fatalf("accepted %+v", req)
		}
	})
}

func FuzzDecodeAttestRequest(f *testing.F) {
	for _, s := range []string{`{"device":"p1","nonce":"AAE=","quote":{"attest":"AAE=","signature":"AAE="},"log":"AAE=","version":"1.0.0"}`,
		`{"device":"p1","nonce":"","quote":{"attest":"AAE=","signature":"AAE="}}`, `{"device":"p1","nonce":"AAE=","quote":{}}`,
		`{"device":"p1","nonce":"AAE=","quote":{"attest":"AAE=","signature":"AAE="},"pcr_value":"AAE="}`, `{}`, `null`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := DecodeAttestRequest(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrForm) {
				t.Fatalf("error without ErrForm: %v", err)
			}
			return
		}
		if !wire.ValidID(req.Device) || len(req.Nonce) == 0 || len(req.Nonce) > 64 || len(req.Quote.Attest) == 0 || len(req.Quote.Signature) == 0 || len(b) > maxAttestBody {
			t.Fatalf("accepted %+v", req)
		}
	})
}

func FuzzDecodeGrantRequest(f *testing.F) {
	for _, s := range []string{`{"kind":"token","tenant":"acme"}`, `{"kind":"serial","tenant":"acme","device":"p1"}`,
		`{"kind":"ek","tenant":"acme","device":"p1","ek":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}`,
		`{"kind":"ek","tenant":"acme","device":"p1","ek":"zz"}`, `{"kind":"serial","tenant":"acme"}`, `{"kind":"token","tenant":"acme","ttl_seconds":-1}`,
		`{"kind":"nope","tenant":"acme"}`, `{}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		gr, hash, err := DecodeGrantRequest(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrForm) {
				t.Fatalf("error without ErrForm: %v", err)
			}
			return
		}
		switch gr.Kind {
		case store.GrantToken:
			if hash != nil {
				t.Fatal("a token grant with a hash from the request")
			}
		case store.GrantSerial, store.GrantEK:
			if len(hash) != 32 || !wire.ValidID(gr.Device) {
				t.Fatalf("accepted %+v with hash %x", gr, hash)
			}
		default:
			t.Fatalf("accepted kind %q", gr.Kind)
		}
		if !wire.ValidID(gr.Tenant) || gr.TTL < 0 {
			t.Fatalf("accepted %+v", gr)
		}
	})
}

func FuzzDecodeCertRequest(f *testing.F) {
	for _, s := range []string{`{"device":"p1","nonce":"AAE=","key_public":"AAE=","certify_attest":"AAE=","certify_sig":"AAE="}`,
		`{"device":"p1","nonce":"AAE="}`, `{"device":"","nonce":"AAE=","key_public":"AAE=","certify_attest":"AAE=","certify_sig":"AAE="}`, `{}`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := DecodeCertRequest(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrForm) {
				t.Fatalf("error without ErrForm: %v", err)
			}
			return
		}
		if !wire.ValidID(req.Device) || len(req.Nonce) == 0 || len(req.KeyPublic) == 0 || len(req.CertifyAttest) == 0 || len(req.CertifySig) == 0 {
			t.Fatalf("accepted %+v", req)
		}
	})
}
