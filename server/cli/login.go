package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"gopkg.in/yaml.v3"

	"github.com/dialtone-dev/dialtone/server/api"
)

// CredentialsFile is where `dialtone login` keeps the session, under the
// user's configuration directory (os.UserConfigDir: $XDG_CONFIG_HOME or
// ~/.config on Linux), mode 0600 in a 0700 directory.
const CredentialsFile = "dialtone/credentials.yaml"

// credentials is the stored session of `dialtone login`.
type credentials struct {
	Server  string    `yaml:"server"`
	User    string    `yaml:"user"`
	Token   string    `yaml:"token"`
	Expires time.Time `yaml:"expires"`
	// CA is the --ca the session was opened with (absolute), trusted
	// for Server by the commands that use the session.
	CA string `yaml:"ca,omitempty"`
}

func credentialsPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("finding the configuration directory: %w", err)
	}
	return filepath.Join(dir, CredentialsFile), nil
}

// loadCredentials reads the stored session; (nil, nil) when there is none.
// A file others may read is refused: a session token is a secret.
func loadCredentials() (*credentials, error) {
	path, err := credentialsPath()
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by others (mode %v): run dialtone login again", path, fi.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return nil, err
	}
	var c credentials
	if err := yaml.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return &c, nil
}

// saveCredentials writes c atomically with mode 0600, its directory 0700.
func saveCredentials(c credentials) (path string, err error) {
	if path, err = credentialsPath(); err != nil {
		return "", err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", err
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, ".credentials-*")
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return "", err
	}
	if _, err := tmp.Write(b); err != nil {
		_ = tmp.Close()
		return "", err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	return path, os.Rename(tmp.Name(), path)
}

// sameServer reports whether two server URLs name the same server, so
// that a session is never sent to another one.
func sameServer(a, b string) bool {
	ua, err1 := url.Parse(strings.TrimSuffix(a, "/"))
	ub, err2 := url.Parse(strings.TrimSuffix(b, "/"))
	return err1 == nil && err2 == nil && strings.EqualFold(ua.Scheme, ub.Scheme) && strings.EqualFold(ua.Host, ub.Host) && ua.Path == ub.Path
}

// fromCredentials fills a missing token (and a missing server) from the
// stored session of `dialtone login`, if it is for the same server and
// has not expired.
func (o *clientOptions) fromCredentials() {
	if o.Token != "" {
		return
	}
	c, err := loadCredentials()
	if err != nil || c == nil || c.Token == "" || !time.Now().Before(c.Expires) {
		return
	}
	if o.Server == "" {
		o.Server = c.Server
	}
	if sameServer(o.Server, c.Server) {
		o.Token = c.Token
		if o.CA == "" {
			o.CA = c.CA
		}
	}
}

// readSecret reads a secret: from the terminal without echo after a
// prompt on stderr when in is one, else the first line of in.
func readSecret(in io.Reader, stderr io.Writer, prompt string) (string, error) {
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(stderr, prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", fmt.Errorf("reading %s: %w", strings.TrimSuffix(prompt, ": "), err)
		}
		return string(b), nil
	}
	// One byte at a time, so that a second secret on the next line stays
	// in in for the next call.
	var line []byte
	b := make([]byte, 1)
	for len(line) < 4096 {
		n, err := in.Read(b)
		if n == 1 {
			if b[0] == '\n' {
				break
			}
			line = append(line, b[0])
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", err
		}
	}
	return strings.TrimRight(string(line), "\r"), nil
}

// isTerminal reports whether in is a terminal.
func isTerminal(in io.Reader) bool {
	f, ok := in.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

type loginOptions struct {
	Server   string
	CA       string
	User     string
	TOTP     string
	Recovery string
	// OIDC logs in through the server's single sign-on instead
	// (login_oidc.go).
	OIDC bool
}

// login logs in and stores the session.
func login(ctx context.Context, o loginOptions, password string) (credentials, string, error) {
	body, err := json.Marshal(api.LoginBody{Name: o.User, Password: password, TOTP: o.TOTP, Recovery: o.Recovery})
	if err != nil {
		return credentials{}, "", err
	}
	var se api.LoginAnswer
	if err := postPublic(ctx, o.Server, o.CA, "/v1/login", "", body, &se); err != nil {
		return credentials{}, "", err
	}
	c := credentials{Server: strings.TrimSuffix(o.Server, "/"), User: o.User, Token: se.Token, Expires: se.Expires, CA: absCA(o.CA)}
	path, err := saveCredentials(c)
	if err != nil {
		return credentials{}, "", fmt.Errorf("storing the session: %w", err)
	}
	return c, path, nil
}

// postPublic posts body to a route that takes no API token, with tok as
// the bearer token if not empty, and decodes a 200 answer into v; ca is
// the --ca trusted for server.
func postPublic(ctx context.Context, server, ca, path, tok string, body []byte, v any) error {
	return apiCall{server: server, ca: ca, token: tok, method: http.MethodPost, path: path, body: body, want: http.StatusOK, limit: 1 << 20}.do(ctx, v)
}

// serverStatusError is a server's refusal with its status code.
type serverStatusError struct {
	Code int
	Msg  string
}

func (e *serverStatusError) Error() string { return e.Msg }

func loginCmd(g *globalOptions) *cobra.Command {
	o := &loginOptions{}
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Log in as an operator and keep the session for the other commands",
		Long: "Log in to a server. The password is read from the terminal without echo, or from the\n" +
			"first line of standard input when that is not a terminal. Admins give --totp (or\n" +
			"--recovery). The session (12 hours) is kept in " + CredentialsFile + " under the user's\n" +
			"configuration directory, mode 0600; every command uses it when given no --token.",
		Args: cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			switch {
			case o.Server == "":
				return firstUsageError(errors.New("--server (or DIALTONE_SERVER) is required"))
			case o.OIDC && (o.TOTP != "" || o.Recovery != ""):
				return firstUsageError(errors.New("--oidc takes no --totp or --recovery: the identity provider asks for its factors"))
			case o.User == "" && !o.OIDC:
				return firstUsageError(errors.New("--user is required"))
			case o.TOTP != "" && o.Recovery != "":
				return firstUsageError(errors.New("give --totp or --recovery, not both"))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.OIDC {
				hc, err := newHTTPClient(o.CA, 30*time.Second)
				if err != nil {
					return err
				}
				se, err := oidcLogin(cmd.Context(), oidcLoginOptions{Server: o.Server, Stdout: g.stderr, Stdin: cmd.InOrStdin(), HTTPClient: hc})
				if err != nil {
					return err
				}
				user := o.User
				if user == "" {
					user = "(single sign-on)"
				}
				c := credentials{Server: strings.TrimSuffix(o.Server, "/"), User: user, Token: se.Token, Expires: se.Expires, CA: absCA(o.CA)}
				path, err := saveCredentials(c)
				if err != nil {
					return fmt.Errorf("storing the session: %w", err)
				}
				fmt.Fprintf(g.stdout, "logged in to %s by single sign-on until %s (session in %s)\n", c.Server, c.Expires.Local().Format(time.RFC3339), path)
				return nil
			}
			pw, err := readSecret(cmd.InOrStdin(), g.stderr, "Password: ")
			if err != nil {
				return err
			}
			if pw == "" {
				return &ExitCodeError{Code: ExitUsage, Err: errors.New("no password given")}
			}
			c, path, err := login(cmd.Context(), *o, pw)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "logged in to %s as %s until %s (session in %s)\n", c.Server, c.User, c.Expires.Local().Format(time.RFC3339), path)
			return nil
		},
	}
	cmd.Flags().StringVar(&o.Server, "server", "", "server URL (env DIALTONE_SERVER)")
	cmd.Flags().StringVar(&o.CA, "ca", "", "PEM file of the CA that issued the server's certificate, on top of the system's roots (env DIALTONE_CA); kept with the session")
	cmd.Flags().StringVar(&o.User, "user", "", "login name")
	cmd.Flags().StringVar(&o.TOTP, "totp", "", "TOTP code of the second factor")
	cmd.Flags().StringVar(&o.Recovery, "recovery", "", "a recovery code, instead of --totp")
	cmd.Flags().BoolVar(&o.OIDC, "oidc", false, "log in through the server's single sign-on (opens a browser URL; no password here)")
	return cmd
}

func logoutCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "End the stored session on its server and forget it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadCredentials()
			if err != nil {
				return err
			}
			if c == nil {
				fmt.Fprintln(g.stdout, "not logged in")
				return nil
			}
			ca := c.CA
			if ca == "" {
				ca = os.Getenv("DIALTONE_CA")
			}
			err = postPublic(cmd.Context(), c.Server, ca, "/v1/logout", c.Token, nil, nil)
			var se *serverStatusError
			if err != nil && !(errors.As(err, &se) && se.Code == http.StatusUnauthorized) {
				// Keep the file: the session may still be valid.
				return err
			}
			path, perr := credentialsPath()
			if perr != nil {
				return perr
			}
			if err := os.Remove(path); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "logged out of %s\n", c.Server)
			return nil
		},
	}
}
