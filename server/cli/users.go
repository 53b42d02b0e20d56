package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dialtone-dev/dialtone/server/api"
	"github.com/dialtone-dev/dialtone/server/auth"
)

// userIDPattern is the shape of the IDs server/auth gives users; anything
// else names a user by login name.
var userIDPattern = regexp.MustCompile(`^u[0-9a-f]{16}$`)

// resolveUser returns the ID of the user named ref (an ID or a login name).
func resolveUser(ctx context.Context, c clientOptions, ref string) (string, error) {
	if userIDPattern.MatchString(ref) {
		return ref, nil
	}
	var list api.UserList
	if err := getJSON(ctx, c, "/v1/users", &list); err != nil {
		return "", err
	}
	for _, u := range list.Users {
		if u.Name == strings.ToLower(ref) {
			return u.ID, nil
		}
	}
	return "", &ExitCodeError{Code: ExitError, Err: fmt.Errorf("no user %q among those you may manage", ref)}
}

func userRow(u auth.UserInfo) []string {
	var ts []string
	for t, r := range u.Tenants {
		ts = append(ts, t+"="+r)
	}
	slices.Sort(ts)
	flags := []string{}
	if u.Platform {
		flags = append(flags, "platform")
	}
	if u.TOTP {
		flags = append(flags, fmt.Sprintf("totp(%d recovery)", u.RecoveryCodes))
	}
	if u.Disabled {
		flags = append(flags, "disabled")
	}
	return []string{u.ID, u.Name, strings.Join(ts, ","), strings.Join(flags, ","), u.Created.Local().Format(time.RFC3339)}
}

var userHeader = []string{"ID", "NAME", "TENANTS", "FLAGS", "CREATED"}

type usersAddOptions struct {
	clientOptions
	outputOptions
	Platform bool
	Tenants  []string // tenant=role
}

// parseMemberships turns tenant=role flags into a map.
func parseMemberships(flags []string) (map[string]string, error) {
	m := map[string]string{}
	for _, f := range flags {
		t, r, ok := strings.Cut(f, "=")
		if !ok || t == "" || !auth.ValidRole(r) {
			return nil, fmt.Errorf("--tenant %q: want tenant=role, role one of %s", f, strings.Join(auth.Roles, ", "))
		}
		if _, dup := m[t]; dup {
			return nil, fmt.Errorf("--tenant: tenant %s given twice", t)
		}
		m[t] = r
	}
	return m, nil
}

func usersCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "users", Short: "Operators: create them, give them roles in tenants, enroll their second factor"}

	ao := &usersAddOptions{}
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Create an operator; the password is read from the terminal (twice) or the first line of stdin",
		Args:  cobra.ExactArgs(1),
		PreRunE: func(*cobra.Command, []string) error {
			_, err := parseMemberships(ao.Tenants)
			return firstUsageError(ao.clientOptions.Validate(), ao.outputOptions.Validate(), err)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			tenants, _ := parseMemberships(ao.Tenants)
			pw, err := readSecret(cmd.InOrStdin(), g.stderr, "Password for "+args[0]+": ")
			if err != nil {
				return err
			}
			if err := auth.CheckPassword(pw); err != nil {
				return &ExitCodeError{Code: ExitUsage, Err: err}
			}
			if isTerminal(cmd.InOrStdin()) {
				again, err := readSecret(cmd.InOrStdin(), g.stderr, "Again: ")
				if err != nil {
					return err
				}
				if again != pw {
					return &ExitCodeError{Code: ExitUsage, Err: errors.New("the passwords differ")}
				}
			}
			body, _ := json.Marshal(api.UserBody{Name: args[0], Password: pw, Platform: ao.Platform, Tenants: tenants})
			var u auth.UserInfo
			if err := sendJSON(cmd.Context(), ao.clientOptions, http.MethodPost, "/v1/users", body, http.StatusCreated, &u); err != nil {
				return err
			}
			if ao.Format == "table" && (u.Platform || slices.Contains(mapsValues(u.Tenants), auth.RoleAdmin)) {
				fmt.Fprintf(g.stderr, "%s is an admin: enroll a second factor (dialtone users totp-enroll %s) before it can log in\n", u.Name, u.Name)
			}
			return ao.print(g.stdout, u, userHeader, [][]string{userRow(u)})
		},
	}
	ao.clientOptions.AddFlags(add)
	ao.outputOptions.AddFlags(add)
	add.Flags().BoolVar(&ao.Platform, "platform", false, "make a platform admin (manages tenants and TUF keys; admin everywhere)")
	add.Flags().StringArrayVar(&ao.Tenants, "tenant", nil, "a role in a tenant, tenant=role (repeatable)")

	lo := &struct {
		clientOptions
		outputOptions
	}{}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the operators you may manage",
		Args:  cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			return firstUsageError(lo.clientOptions.Validate(), lo.outputOptions.Validate())
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out api.UserList
			if err := getJSON(cmd.Context(), lo.clientOptions, "/v1/users", &out); err != nil {
				return err
			}
			rows := make([][]string, 0, len(out.Users))
			for _, u := range out.Users {
				rows = append(rows, userRow(u))
			}
			return lo.print(g.stdout, out.Users, userHeader, rows)
		},
	}
	lo.clientOptions.AddFlags(list)
	lo.outputOptions.AddFlags(list)

	gro := &struct {
		clientOptions
		outputOptions
	}{}
	grant := &cobra.Command{
		Use:   "grant USER TENANT ROLE",
		Short: "Give a user (ID or name) a role in a tenant, replacing any role there",
		Args:  cobra.ExactArgs(3),
		PreRunE: func(_ *cobra.Command, args []string) error {
			var err error
			if !auth.ValidRole(args[2]) {
				err = fmt.Errorf("role %q: want one of %s", args[2], strings.Join(auth.Roles, ", "))
			}
			return firstUsageError(gro.clientOptions.Validate(), gro.outputOptions.Validate(), err)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := resolveUser(cmd.Context(), gro.clientOptions, args[0])
			if err != nil {
				return err
			}
			body, _ := json.Marshal(api.RoleBody{Role: args[2]})
			var u auth.UserInfo
			path := "/v1/users/" + url.PathEscape(id) + "/tenants/" + url.PathEscape(args[1])
			if err := sendJSON(cmd.Context(), gro.clientOptions, http.MethodPut, path, body, http.StatusOK, &u); err != nil {
				return err
			}
			return gro.print(g.stdout, u, userHeader, [][]string{userRow(u)})
		},
	}
	gro.clientOptions.AddFlags(grant)
	gro.outputOptions.AddFlags(grant)

	ro := &clientOptions{}
	revoke := &cobra.Command{
		Use:   "revoke USER TENANT",
		Short: "Take a user (ID or name) out of a tenant",
		Args:  cobra.ExactArgs(2),
		PreRunE: func(*cobra.Command, []string) error {
			return firstUsageError(ro.Validate())
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := resolveUser(cmd.Context(), *ro, args[0])
			if err != nil {
				return err
			}
			path := "/v1/users/" + url.PathEscape(id) + "/tenants/" + url.PathEscape(args[1])
			if err := sendJSON(cmd.Context(), *ro, http.MethodDelete, path, nil, http.StatusOK, nil); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%s removed from %s\n", args[0], args[1])
			return nil
		},
	}
	ro.AddFlags(revoke)

	eo := &struct {
		clientOptions
		outputOptions
	}{}
	enroll := &cobra.Command{
		Use:   "totp-enroll USER",
		Short: "Give a user (ID or name) a new TOTP secret and recovery codes, shown once",
		Long: "Give a user a new TOTP second factor, replacing any it had. The otpauth:// URL (for an\n" +
			"authenticator app) and the 10 single-use recovery codes are shown once: hand them to the user.",
		Args: cobra.ExactArgs(1),
		PreRunE: func(*cobra.Command, []string) error {
			return firstUsageError(eo.clientOptions.Validate(), eo.outputOptions.Validate())
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := resolveUser(cmd.Context(), eo.clientOptions, args[0])
			if err != nil {
				return err
			}
			var e auth.Enrollment
			if err := sendJSON(cmd.Context(), eo.clientOptions, http.MethodPost, "/v1/users/"+url.PathEscape(id)+"/totp", nil, http.StatusCreated, &e); err != nil {
				return err
			}
			if eo.Format == "json" {
				return eo.print(g.stdout, e, nil, nil)
			}
			fmt.Fprintln(g.stderr, "shown once: give these to the user now")
			fmt.Fprintf(g.stdout, "url:     %s\nsecret:  %s\nrecovery codes (each works once):\n", e.URL, e.Secret)
			for _, c := range e.RecoveryCodes {
				fmt.Fprintf(g.stdout, "  %s\n", c)
			}
			return nil
		},
	}
	eo.clientOptions.AddFlags(enroll)
	eo.outputOptions.AddFlags(enroll)

	po := &clientOptions{}
	var self bool
	password := &cobra.Command{
		Use:   "password USER",
		Short: "Set a user's password (from the terminal or stdin); ends the user's sessions",
		Args:  cobra.ExactArgs(1),
		PreRunE: func(*cobra.Command, []string) error {
			return firstUsageError(po.Validate())
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := resolveUser(cmd.Context(), *po, args[0])
			if err != nil {
				return err
			}
			var pb api.PasswordBody
			if self {
				if pb.Current, err = readSecret(cmd.InOrStdin(), g.stderr, "Current password: "); err != nil {
					return err
				}
			}
			if pb.Password, err = readSecret(cmd.InOrStdin(), g.stderr, "New password: "); err != nil {
				return err
			}
			if err := auth.CheckPassword(pb.Password); err != nil {
				return &ExitCodeError{Code: ExitUsage, Err: err}
			}
			body, _ := json.Marshal(pb)
			if err := sendJSON(cmd.Context(), *po, http.MethodPost, "/v1/users/"+url.PathEscape(id)+"/password", body, http.StatusOK, nil); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "password of %s set; its sessions are ended\n", args[0])
			return nil
		},
	}
	po.AddFlags(password)
	password.Flags().BoolVar(&self, "self", false, "it is your own password: read the current one first")

	cmd.AddCommand(add, list, grant, revoke, enroll, password, linkSSOCmd(g, false), linkSSOCmd(g, true))
	return cmd
}

// linkSSOCmd is `users link-sso` (or, unlink, `users unlink-sso`).
func linkSSOCmd(g *globalOptions, unlink bool) *cobra.Command {
	o := &clientOptions{}
	var ident auth.Identity
	use, short := "link-sso USER", "Link a single sign-on account (--issuer, --subject; never an email) to a user"
	if unlink {
		use, short = "unlink-sso USER", "Remove a single sign-on account's link to a user"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		PreRunE: func(*cobra.Command, []string) error {
			var err error
			if ident.Issuer == "" || ident.Subject == "" {
				err = errors.New("--issuer and --subject are required")
			}
			return firstUsageError(o.Validate(), err)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := resolveUser(cmd.Context(), *o, args[0])
			if err != nil {
				return err
			}
			path := "/v1/users/" + url.PathEscape(id) + "/identities"
			if unlink {
				q := url.Values{"issuer": {ident.Issuer}, "subject": {ident.Subject}}
				err = sendJSON(cmd.Context(), *o, http.MethodDelete, path+"?"+q.Encode(), nil, http.StatusOK, nil)
			} else {
				body, _ := json.Marshal(ident)
				err = sendJSON(cmd.Context(), *o, http.MethodPost, path, body, http.StatusCreated, nil)
			}
			if err != nil {
				return err
			}
			verb := "linked to"
			if unlink {
				verb = "unlinked from"
			}
			fmt.Fprintf(g.stdout, "%s %s at %s %s %s\n", "account", ident.Subject, ident.Issuer, verb, args[0])
			return nil
		},
	}
	o.AddFlags(cmd)
	cmd.Flags().StringVar(&ident.Issuer, "issuer", "", "the identity provider's issuer URL")
	cmd.Flags().StringVar(&ident.Subject, "subject", "", "the account's subject (sub) at the provider")
	return cmd
}

func mapsValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
