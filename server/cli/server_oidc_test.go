package cli

import (
	"os"
	"path/filepath"
	"testing"
)

func TestServerOIDCFlags(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	full := serverOIDCOptions{Issuer: "https://idp.example", ClientID: "dialtone", ClientSecretFile: secret,
		RedirectURL: "https://dialtone.example/v1/oidc/callback"}
	d, err := full.daemonOptions()
	if err != nil || d.ClientSecret != "s3cret" || d.Issuer != full.Issuer {
		t.Fatalf("%+v %v", d, err)
	}
	if d, err := (&serverOIDCOptions{}).daemonOptions(); err != nil || d.Issuer != "" {
		t.Fatalf("no SSO: %+v %v", d, err)
	}
	for name, o := range map[string]serverOIDCOptions{
		"no issuer":     {ClientID: "x"},
		"no client":     {Issuer: full.Issuer, ClientSecretFile: secret, RedirectURL: full.RedirectURL},
		"no secret":     {Issuer: full.Issuer, ClientID: "x", RedirectURL: full.RedirectURL},
		"missing file":  {Issuer: full.Issuer, ClientID: "x", ClientSecretFile: secret + ".none", RedirectURL: full.RedirectURL},
		"no redirect":   {Issuer: full.Issuer, ClientID: "x", ClientSecretFile: secret},
		"domains alone": {AllowedDomains: []string{"msp.example"}},
	} {
		if _, err := o.daemonOptions(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
