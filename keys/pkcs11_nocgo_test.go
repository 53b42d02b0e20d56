//go:build !cgo

package keys

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestPKCS11WithoutCgo(t *testing.T) {
	const uri = "pkcs11:token=dialtone;object=root?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234"
	_, err := LoadSigner(context.Background(), uri)
	if !errors.Is(err, ErrUnsupportedURI) || !strings.Contains(err.Error(), "this build has no PKCS#11 support (built without cgo)") {
		t.Fatalf("LoadSigner: err = %v", err)
	}
	if strings.Contains(err.Error(), "1234") {
		t.Fatalf("err = %q quotes the PIN", err)
	}
	if _, err := GenerateURI(context.Background(), uri); !errors.Is(err, ErrUnsupportedURI) {
		t.Fatalf("GenerateURI: err = %v", err)
	}
	// URI mistakes are still reported as such.
	if _, err := LoadSigner(context.Background(), "pkcs11:token=dialtone;object=root"); err == nil || !strings.Contains(err.Error(), "module-path") {
		t.Fatalf("LoadSigner without module-path: err = %v", err)
	}
}
