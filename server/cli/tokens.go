package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/dialtone-dev/dialtone/server/api"
	"github.com/spf13/cobra"
)

type tokensCreateOptions struct {
	clientOptions
	outputOptions
	Tenant      string
	Role        string
	Models      []string
	TTL         time.Duration
	Description string
}

func tokensCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "tokens", Short: "API tokens for CI and scripts: scoped to a tenant and role (publishers to models), expiring, revocable"}
	co := &tokensCreateOptions{}
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a token; it is shown once and stored only as a hash",
		Args:  cobra.NoArgs,
		Long: `Create an API token with a role in a tenant (--tenant, --role viewer, operator or admin),
or a publisher token for CI that publishes firmware of the --models it names (a tenant is
optional for those: publishing is limited by models, not tenants). Tokens expire (--expires,
at most a year); the token is shown once and the server keeps only its hash.`,
		PreRunE: func(*cobra.Command, []string) error {
			return firstUsageError(co.clientOptions.Validate(), co.outputOptions.Validate())
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			body, _ := json.Marshal(api.TokenRequest{Tenant: co.Tenant, Role: co.Role, Models: co.Models, TTL: co.TTL, Description: co.Description})
			var info api.TokenInfo
			if err := sendJSON(cmd.Context(), co.clientOptions, http.MethodPost, "/v1/tokens", body, http.StatusCreated, &info); err != nil {
				return err
			}
			if co.Format == "table" {
				fmt.Fprintf(g.stderr, "store this token now: it is not shown again\n")
			}
			return co.print(g.stdout, info, []string{"ID", "TOKEN", "TENANT", "ROLE", "MODELS", "EXPIRES"},
				[][]string{{info.ID, info.Token, orDash(info.Tenant), info.Role, strings.Join(info.Models, ","), info.Expires.Format(time.RFC3339)}})
		},
	}
	co.clientOptions.AddFlags(create)
	co.outputOptions.AddFlags(create)
	create.Flags().StringVar(&co.Tenant, "tenant", "", "tenant the token acts in (required but for publisher tokens)")
	create.Flags().StringVar(&co.Role, "role", "publisher", "role of the token: viewer, operator, publisher or admin")
	create.Flags().StringSliceVar(&co.Models, "models", nil, "models a publisher token may publish (required for publishers)")
	create.Flags().DurationVar(&co.TTL, "expires", 90*24*time.Hour, "lifetime, at most "+api.MaxTokenTTL.String())
	create.Flags().DurationVar(&co.TTL, "ttl", 90*24*time.Hour, "lifetime (the old name of --expires)")
	_ = create.Flags().MarkHidden("ttl")
	create.Flags().StringVar(&co.Description, "description", "", "what the token is for")

	lo := &tokensCreateOptions{}
	list := &cobra.Command{
		Use:   "list",
		Short: "List tokens (never their secrets)",
		Args:  cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			return firstUsageError(lo.clientOptions.Validate(), lo.outputOptions.Validate())
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct {
				Tokens []api.TokenInfo `json:"tokens"`
			}
			if err := getJSON(cmd.Context(), lo.clientOptions, "/v1/tokens", &out); err != nil {
				return err
			}
			var rows [][]string
			for _, t := range out.Tokens {
				state := "valid"
				switch {
				case !t.Revoked.IsZero():
					state = "revoked"
				case time.Now().After(t.Expires):
					state = "expired"
				}
				rows = append(rows, []string{t.ID, orDash(t.Tenant), t.Role, strings.Join(t.Models, ","), t.Expires.Format(time.RFC3339), state, t.Description})
			}
			return lo.print(g.stdout, out.Tokens, []string{"ID", "TENANT", "ROLE", "MODELS", "EXPIRES", "STATE", "DESCRIPTION"}, rows)
		},
	}
	lo.clientOptions.AddFlags(list)
	lo.outputOptions.AddFlags(list)

	ro := &clientOptions{}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a token at once",
		Args:  cobra.ExactArgs(1),
		PreRunE: func(*cobra.Command, []string) error {
			return firstUsageError(ro.Validate())
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := sendJSON(cmd.Context(), *ro, http.MethodDelete, "/v1/tokens/"+args[0], nil, http.StatusOK, nil); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "revoked %s\n", args[0])
			return nil
		},
	}
	ro.AddFlags(revoke)
	cmd.AddCommand(create, list, revoke)
	return cmd
}

// sendJSON sends body (may be nil) and decodes the answer into v (may be nil).
func sendJSON(ctx context.Context, c clientOptions, method, path string, body []byte, want int, v any) error {
	if body == nil {
		body = []byte{} // a JSON request, even when empty
	}
	return apiCall{server: c.Server, ca: c.CA, token: c.Token, method: method, path: path, body: body, want: want, limit: 8 << 20}.do(ctx, v)
}
