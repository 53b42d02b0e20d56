package api

import (
	"bytes"
	"errors"
	"mime/multipart"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/dialtone-dev/dialtone/server/sipsecret"
	"github.com/dialtone-dev/dialtone/server/tufrepo"
)

func FuzzDecodeSIPCredentialRequest(f *testing.F) {
	for _, s := range []string{`{"password":"s3cret"}`, `{"password":"s3cret","auth_user":"1001"}`, `{"password":""}`,
		`{"password":"a\nb"}`, `{"password":"a\u0085b"}`, `{"password":"ü"}`, `{"password":"x","auth_user":"a b"}`,
		`{"password":"x","extra":1}`, `{"password":"x"} {}`, `null`, `{}`, ``, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := DecodeSIPCredentialRequest(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrForm) {
				t.Fatalf("error without ErrForm: %v", err)
			}
			if req != (SIPCredentialRequest{}) {
				t.Fatalf("a refusal returned %+v", req)
			}
			return
		}
		if len(req.Password) == 0 || len(req.Password) > sipsecret.MaxPassword || !utf8.ValidString(req.Password) || len(b) > maxSIPCredentialBody {
			t.Fatalf("accepted password %q", req.Password)
		}
		if strings.ContainsFunc(req.Password, unicode.IsControl) {
			t.Fatalf("accepted a control character in %q", req.Password)
		}
		if req.AuthUser != "" && !validAuthUser(req.AuthUser) {
			t.Fatalf("accepted auth_user %q", req.AuthUser)
		}
	})
}

// configBody is a multipart body of parts name=value, in order.
func configBody(boundary string, parts ...[2]string) []byte {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.SetBoundary(boundary)
	for _, p := range parts {
		w, _ := mw.CreateFormField(p[0])
		_, _ = w.Write([]byte(p[1]))
	}
	_ = mw.Close()
	return buf.Bytes()
}

func FuzzReadConfigForm(f *testing.F) {
	const boundary = "fuzzboundary"
	f.Add(configBody(boundary, [2]string{"role", "config"}, [2]string{"metadata", `{"signed":{}}`}, [2]string{"file", `{"proxy":"a:1"}`}))
	f.Add(configBody(boundary, [2]string{"role", "config"}, [2]string{"file", "x"}, [2]string{"metadata", "y"}))
	f.Add(configBody(boundary, [2]string{"role", "config"}, [2]string{"metadata", "m"}, [2]string{"file", "f"}, [2]string{"extra", "e"}))
	f.Add(configBody(boundary, [2]string{"role", ""}, [2]string{"metadata", "m"}, [2]string{"file", "f"}))
	f.Add(configBody(boundary))
	f.Add([]byte("--fuzzboundary--\r\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		form, err := ReadConfigForm(multipart.NewReader(bytes.NewReader(b), boundary))
		if err != nil {
			if !errors.Is(err, ErrForm) {
				t.Fatalf("error without ErrForm: %v", err)
			}
			return
		}
		if len(form.Role) == 0 || len(form.Role) > 128 || len(form.Metadata) == 0 || len(form.Metadata) > tufrepo.MaxMetadataBytes ||
			len(form.File) == 0 || len(form.File) > tufrepo.MaxConfigBytes {
			t.Fatalf("accepted role %d, metadata %d, file %d bytes", len(form.Role), len(form.Metadata), len(form.File))
		}
	})
}
