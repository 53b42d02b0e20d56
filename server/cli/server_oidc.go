package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/dialtone-dev/dialtone/server/daemon"
	"github.com/spf13/cobra"
)

// serverOIDCOptions are `dialtone server`'s single sign-on flags.
type serverOIDCOptions struct {
	Issuer           string
	ClientID         string
	ClientSecretFile string
	RedirectURL      string
	AllowedDomains   []string
	StateKeyFile     string
}

func (o *serverOIDCOptions) AddFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.Issuer, "oidc-issuer", "", "single sign-on: the OpenID Connect provider's issuer URL (discovery at ISSUER/.well-known/openid-configuration); empty: no SSO")
	f.StringVar(&o.ClientID, "oidc-client-id", "", "single sign-on: this server's client ID at the provider")
	f.StringVar(&o.ClientSecretFile, "oidc-client-secret-file", "", "single sign-on: file holding the client secret")
	f.StringVar(&o.RedirectURL, "oidc-redirect-url", "", "single sign-on: the callback registered at the provider, https://HOST/v1/oidc/callback")
	f.StringSliceVar(&o.AllowedDomains, "oidc-allowed-domains", nil, "single sign-on: admit only identities whose hosted domain (hd) or verified email domain is one of these")
	f.StringVar(&o.StateKeyFile, "oidc-state-key-file", "", "single sign-on: file with the key (32+ random bytes) signing login state; replicas must share it (default DATA/"+daemon.OIDCStateKeyFile+", created)")
}

// daemonOptions checks the flags and reads the client secret.
func (o *serverOIDCOptions) daemonOptions() (daemon.OIDCOptions, error) {
	if o.Issuer == "" {
		if o.ClientID != "" || o.ClientSecretFile != "" || o.RedirectURL != "" || len(o.AllowedDomains) > 0 || o.StateKeyFile != "" {
			return daemon.OIDCOptions{}, errors.New("--oidc-* flags need --oidc-issuer")
		}
		return daemon.OIDCOptions{}, nil
	}
	if o.ClientID == "" || o.ClientSecretFile == "" || o.RedirectURL == "" {
		return daemon.OIDCOptions{}, errors.New("--oidc-issuer needs --oidc-client-id, --oidc-client-secret-file and --oidc-redirect-url")
	}
	b, err := os.ReadFile(o.ClientSecretFile)
	if err != nil {
		return daemon.OIDCOptions{}, fmt.Errorf("reading the OIDC client secret: %w", err)
	}
	secret := strings.TrimSpace(string(b))
	if secret == "" {
		return daemon.OIDCOptions{}, fmt.Errorf("OIDC client secret file %s is empty", o.ClientSecretFile)
	}
	return daemon.OIDCOptions{Issuer: o.Issuer, ClientID: o.ClientID, ClientSecret: secret, RedirectURL: o.RedirectURL,
		AllowedDomains: o.AllowedDomains, KeyFile: o.StateKeyFile}, nil
}
