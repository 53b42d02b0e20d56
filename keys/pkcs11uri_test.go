package keys

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParsePKCS11URI(t *testing.T) {
	tests := []struct {
		uri     string
		want    *pkcs11URI
		errText string // "" with want == nil: any error
	}{
		{
			uri: "pkcs11:token=dialtone;object=root?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234",
			want: &pkcs11URI{Token: "dialtone", Object: "root",
				ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PINValue: "1234"},
		},
		{
			// The RFC 7512 example has serial= with an empty value, which RFC
			// 7512 reads as "matches an empty serial"; the parser refuses empty
			// values, so that a half-written URI never matches broadly.
			uri:     "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial=?pin-source=file:/etc/token_pin",
			errText: `attribute "serial" is empty`,
		},
		{
			uri: "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91?pin-source=file:/etc/token_pin",
			want: &pkcs11URI{Token: "The Software PKCS#11 Softtoken", Manufacturer: "Snake Oil, Inc.", Model: "1.0",
				Object: "my-certificate", Type: "cert", ID: []byte{0x69, 0x95, 0x3e, 0x5c, 0xf4, 0xbd, 0xec, 0x91},
				PINSource: "file:/etc/token_pin"},
		},
		{uri: "pkcs11:", want: &pkcs11URI{}},
		{uri: "PKCS11:object=a", want: &pkcs11URI{Object: "a"}},
		{uri: "pkcs11:object=a+b=c", want: &pkcs11URI{Object: "a+b=c"}},
		{uri: "pkcs11:slot-id=0;object=k", want: &pkcs11URI{SlotID: "0", Object: "k"}},
		{uri: "pkcs11:library-version=2.6;object=k", want: &pkcs11URI{LibVersion: "2.6", Object: "k"}},
		{uri: "pkcs11:object=k?module-name=softhsm2", want: &pkcs11URI{Object: "k", ModuleName: "softhsm2"}},

		{uri: "pkcs11", errText: "not a pkcs11"},
		{uri: "file:///x", errText: "not a pkcs11"},
		{uri: "pkcs11:object=k#frag", errText: "fragment"},
		{uri: "pkcs11:object=k;", errText: "empty attribute"},
		{uri: "pkcs11:;object=k", errText: "empty attribute"},
		{uri: "pkcs11:object=k?", errText: "empty query"},
		{uri: "pkcs11:object=k?module-path=/a&&pin-value=1", errText: "empty attribute"},
		{uri: "pkcs11:object", errText: "has no value"},
		{uri: "pkcs11:object=", errText: "is empty"},
		{uri: "pkcs11:objet=k", errText: `unknown attribute "objet"`},
		{uri: "pkcs11:x-vendor=1", errText: "unknown attribute"},
		{uri: "pkcs11:object=a;object=b", errText: "more than once"},
		{uri: "pkcs11:object=k;module-path=/lib.so", errText: "belongs in the query"},
		{uri: "pkcs11:object=k?token=t", errText: "belongs in the path"},
		{uri: "pkcs11:object=%4", errText: "truncated"},
		{uri: "pkcs11:object=%zz", errText: "bad percent"},
		{uri: "pkcs11:type=secret", errText: "type"},
		{uri: "pkcs11:slot-id=-1", errText: "slot-id"},
		{uri: "pkcs11:slot-id=+1", errText: "slot-id"},
		{uri: "pkcs11:library-version=1.256", errText: "library-version"},
		{uri: "pkcs11:library-version=1.", errText: "library-version"},
		{uri: "pkcs11:object=k?module-path=lib.so", errText: "absolute"},
		{uri: "pkcs11:object=k?pin-value=1&pin-source=file:/p", errText: "both"},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			got, err := parsePKCS11URI(tt.uri)
			if tt.want == nil {
				if err == nil {
					t.Fatalf("parsed %+v, want an error", got)
				}
				if !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("err = %q, want it to mention %q", err, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
			again, err := parsePKCS11URI(got.String())
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Fatalf("String() = %q does not parse back: %+v, %v", got.String(), again, err)
			}
		})
	}
}

func TestPKCS11URIString(t *testing.T) {
	u := &pkcs11URI{Token: "my token", Object: "a;b?c", ID: []byte{0, 0xff},
		ModulePath: "/usr/lib/x 1/lib.so", PINValue: "p&q"}
	const want = "pkcs11:token=my%20token;object=a%3Bb%3Fc;id=%00%FF?module-path=/usr/lib/x%201/lib.so&pin-value=p%26q"
	if got := u.String(); got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	if got := u.Redacted(); strings.Contains(got, "p%26q") || !strings.Contains(got, "pin-value=REDACTED") {
		t.Fatalf("Redacted() = %q", got)
	}
}

func TestParseKeyRef(t *testing.T) {
	tests := []struct{ uri, errText string }{
		{"pkcs11:token=t;object=k?module-path=/m.so", ""},
		{"pkcs11:id=%01?module-path=/m.so", ""},
		{"pkcs11:token=t;object=k;type=private?module-path=/m.so", ""},
		{"pkcs11:token=t;object=k", "module-path is required"},
		{"pkcs11:token=t;object=k?module-name=softhsm2", "module-name"},
		{"pkcs11:token=t?module-path=/m.so", "object=LABEL or id="},
		{"pkcs11:token=t;object=k;type=cert?module-path=/m.so", "type=private"},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			_, err := parseKeyRef(tt.uri)
			if tt.errText == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.errText) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.errText)
			}
		})
	}
}

func TestPKCS11PIN(t *testing.T) {
	dir := t.TempDir()
	pinFile := filepath.Join(dir, "pin")
	if err := os.WriteFile(pinFile, []byte("4321\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, uri, env string
		want           string
		ok             bool
		errText        string
	}{
		{name: "pin-value", uri: "pkcs11:object=k?pin-value=12%2634", env: "env", want: "12&34", ok: true},
		{name: "pin-source file:", uri: "pkcs11:object=k?pin-source=file:" + pinFile, env: "env", want: "4321", ok: true},
		{name: "pin-source file:///", uri: "pkcs11:object=k?pin-source=file://" + pinFile, want: "4321", ok: true},
		{name: "pin-source path", uri: "pkcs11:object=k?pin-source=" + pinFile, want: "4321", ok: true},
		{name: "env", uri: "pkcs11:object=k", env: "9999", want: "9999", ok: true},
		{name: "none", uri: "pkcs11:object=k"},
		{name: "pin-source command", uri: "pkcs11:object=k?pin-source=%7Ccat%20/etc/passwd", errText: "file:/absolute/path"},
		{name: "pin-source remote", uri: "pkcs11:object=k?pin-source=file://host/pin", errText: "remote"},
		{name: "pin-source relative", uri: "pkcs11:object=k?pin-source=file:pin", errText: "absolute"},
		{name: "pin-source missing", uri: "pkcs11:object=k?pin-source=file:" + filepath.Join(dir, "nope"), errText: "no such file"},
		{name: "pin-source empty", uri: "pkcs11:object=k?pin-source=file:" + empty, errText: "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env == "" {
				unsetEnv(t, PKCS11PINEnv)
			} else {
				t.Setenv(PKCS11PINEnv, tt.env)
			}
			u, err := parsePKCS11URI(tt.uri)
			if err != nil {
				t.Fatal(err)
			}
			pin, ok, err := u.pin()
			if tt.errText != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.errText)
				}
				return
			}
			if err != nil || pin != tt.want || ok != tt.ok {
				t.Fatalf("pin() = %q, %v, %v; want %q, %v", pin, ok, err, tt.want, tt.ok)
			}
		})
	}
}

func TestRedactURI(t *testing.T) {
	tests := []struct{ in, want string }{
		{"pkcs11:object=k?module-path=/m.so&pin-value=1234", "pkcs11:object=k?module-path=/m.so&pin-value=REDACTED"},
		{"pkcs11:object=k?pin-value=1234&module-path=/m.so", "pkcs11:object=k?pin-value=REDACTED&module-path=/m.so"},
		{"pkcs11:pin-value=1234;object=k", "pkcs11:pin-value=REDACTED;object=k"},
		{"pkcs11:object=pin-value=1", "pkcs11:object=pin-value=1"},
		{"pkcs11:object=k?pin-value=ab?cd&x", "pkcs11:object=k?pin-value=REDACTED&x"},
		{"PKCS11:object=k?pin-value=1#frag", "PKCS11:object=k?pin-value=REDACTED"},
		{"/keys/pin-value=1", "/keys/pin-value=1"},
		{"hashivault://k", "hashivault://k"},
	}
	for _, tt := range tests {
		if got := RedactURI(tt.in); got != tt.want {
			t.Errorf("RedactURI(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzParsePKCS11URI checks that the parser never panics, that what it
// accepts survives a String round trip, and that redaction hides every PIN
// it would read.
func FuzzParsePKCS11URI(f *testing.F) {
	for _, s := range []string{
		"pkcs11:token=dialtone;object=root?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234",
		"pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91?pin-source=file:/etc/token_pin",
		"pkcs11:slot-id=1;library-version=2.6;slot-description=x?module-name=softhsm2",
		"pkcs11:object=%zz",
		"pkcs11:",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := parsePKCS11URI(s)
		if err != nil {
			if u != nil {
				t.Fatal("non-nil uri with an error")
			}
			return
		}
		again, err := parsePKCS11URI(u.String())
		if err != nil {
			t.Fatalf("String() = %q does not parse: %v", u.String(), err)
		}
		if !reflect.DeepEqual(again, u) {
			t.Fatalf("round trip changed %q:\n%+v\n%+v", s, u, again)
		}
		if u.PINValue != "" {
			r, err := parsePKCS11URI(RedactURI(s))
			if err != nil {
				t.Fatalf("redacted %q does not parse: %v", RedactURI(s), err)
			}
			if r.PINValue != "REDACTED" {
				t.Fatalf("RedactURI(%q) leaves pin-value %q", s, r.PINValue)
			}
			if rr, err := parsePKCS11URI(u.Redacted()); err != nil || rr.PINValue != "REDACTED" {
				t.Fatalf("Redacted() = %q leaves the PIN", u.Redacted())
			}
		}
	})
}
