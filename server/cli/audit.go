package cli

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/api"
	"github.com/dialtone-dev/dialtone/server/audit"
	"github.com/dialtone-dev/dialtone/server/store"
	"github.com/spf13/cobra"
)

func auditCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Read and verify the audit log of changes"}
	cmd.AddCommand(auditListCmd(g), auditVerifyCmd(g))
	return cmd
}

// auditListOptions are those of `audit list`.
type auditListOptions struct {
	clientOptions
	outputOptions
	After  uint64
	Limit  int
	Tenant string
	All    bool
}

func (o *auditListOptions) AddFlags(cmd *cobra.Command) {
	o.clientOptions.AddFlags(cmd)
	o.outputOptions.AddFlags(cmd)
	f := cmd.Flags()
	f.Uint64Var(&o.After, "after", 0, "list entries after this seq")
	f.IntVar(&o.Limit, "limit", store.DefaultAuditLimit, fmt.Sprintf("entries per page (1 to %d)", store.MaxAuditLimit))
	f.StringVar(&o.Tenant, "tenant", "", "only entries of this tenant")
	f.BoolVar(&o.All, "all", false, "every entry after --after, a page at a time")
}

func (o *auditListOptions) Validate() error {
	if err := o.clientOptions.Validate(); err != nil {
		return err
	}
	if err := o.outputOptions.Validate(); err != nil {
		return err
	}
	if o.Limit < 1 || o.Limit > store.MaxAuditLimit {
		return fmt.Errorf("--limit %d: want 1 to %d", o.Limit, store.MaxAuditLimit)
	}
	if o.Tenant != "" && !wire.ValidID(o.Tenant) {
		return fmt.Errorf("--tenant %q is not a valid name", o.Tenant)
	}
	return nil
}

func auditListCmd(g *globalOptions) *cobra.Command {
	o := &auditListOptions{}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List audit log entries: who changed what, in which tenant, from where",
		Long: `List audit log entries in seq order: who changed what, in which tenant,
from where, with the status it was answered with (-o json adds the states
before and after, and the hashes).

A page holds --limit entries; without --all, a listing with more ends with
the --after of the next page on stderr.`,
		Example: `  dialtone audit list --tenant acme
  dialtone audit list --after 1200 --all -o json`,
		Args: cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			return firstUsageError(o.Validate())
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAuditList(cmd.Context(), o, g.stdout, g.stderr)
		},
	}
	o.AddFlags(cmd)
	return cmd
}

func runAuditList(ctx context.Context, o *auditListOptions, stdout, stderr io.Writer) error {
	var es []audit.Entry
	after := o.After
	var next uint64
	for {
		page, err := auditPage(ctx, o.clientOptions, after, o.Limit, o.Tenant)
		if err != nil {
			return err
		}
		es = append(es, page.Entries...)
		next = page.Next
		if !o.All || next == 0 {
			break
		}
		after = next
	}
	if es == nil {
		es = []audit.Entry{}
	}
	rows := make([][]string, 0, len(es))
	for _, e := range es {
		rows = append(rows, []string{strconv.FormatUint(e.Seq, 10), e.Time.Local().Format(time.DateTime), e.Actor, orDash(e.Tenant),
			e.Action, orDash(e.Target), strconv.Itoa(e.Status), orDash(e.Remote)})
	}
	if err := o.print(stdout, es, []string{"SEQ", "TIME", "ACTOR", "TENANT", "ACTION", "TARGET", "STATUS", "REMOTE"}, rows); err != nil {
		return err
	}
	if next != 0 && !o.All {
		fmt.Fprintf(stderr, "more entries: --all lists them all, --after %d the next page\n", next)
	}
	return nil
}

func auditPage(ctx context.Context, c clientOptions, after uint64, limit int, tenant string) (api.AuditPage, error) {
	q := url.Values{}
	if after > 0 {
		q.Set("after", strconv.FormatUint(after, 10))
	}
	q.Set("limit", strconv.Itoa(limit))
	if tenant != "" {
		q.Set("tenant", tenant)
	}
	var page api.AuditPage
	if err := getJSON(ctx, c, "/v1/audit?"+q.Encode(), &page); err != nil {
		return api.AuditPage{}, err
	}
	// A server that pages backwards would keep us here for ever.
	for _, e := range page.Entries {
		if e.Seq <= after {
			return api.AuditPage{}, fmt.Errorf("the server answered entry %d for entries after %d", e.Seq, after)
		}
	}
	if page.Next != 0 && page.Next <= after {
		return api.AuditPage{}, fmt.Errorf("the server's next page (%d) does not move past %d", page.Next, after)
	}
	return page, nil
}

// auditVerifyOptions are those of `audit verify`.
type auditVerifyOptions struct {
	clientOptions
	outputOptions
}

func (o *auditVerifyOptions) AddFlags(cmd *cobra.Command) {
	o.clientOptions.AddFlags(cmd)
	o.outputOptions.AddFlags(cmd)
}

func (o *auditVerifyOptions) Validate() error {
	return errors.Join(o.clientOptions.Validate(), o.outputOptions.Validate())
}

// AuditReport is what `audit verify -o json` prints.
type AuditReport struct {
	Entries        int             `json:"entries"`
	Head           audit.Head      `json:"head"`
	AppendFailures uint64          `json:"append_failures"`
	Problems       []audit.Problem `json:"problems"`
}

func auditVerifyCmd(g *globalOptions) *cobra.Command {
	o := &auditVerifyOptions{}
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Fetch the whole audit log and check its hash chain and head",
		Long: `Fetch the whole audit log through the API and check it here: every entry's
hash against its content, the chain of hashes from the first entry on, and
the end of the chain against the head the server anchored. Each problem is
printed with the seq it concerns and what it is:

  edited     an entry's content no longer matches its hash, or it was
             rewritten with a recomputed hash its successor does not chain to
  removed    entries missing from the middle or the start of the log
  reordered  an entry moved to another seq
  truncated  the last entries are missing (the log ends before the head)
  inserted   an entry the server did not append

It also fails when the server reports appends that failed since it
started: changes missing from the log. The exit status is 3 when anything
is wrong. It needs the whole log: a platform admin's credentials.

Someone who can rewrite both the database's log and its head can rewrite
history consistently; keep the head printed here (or the server's "audit
appended" log lines) somewhere else, and compare.`,
		Args: cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			return firstUsageError(o.Validate())
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAuditVerify(cmd.Context(), o, g.stdout)
		},
	}
	o.AddFlags(cmd)
	return cmd
}

func runAuditVerify(ctx context.Context, o *auditVerifyOptions, stdout io.Writer) error {
	var before, after api.AuditHead
	if err := getJSON(ctx, o.clientOptions, "/v1/audit/head", &before); err != nil {
		return fmt.Errorf("reading the head: %w", err)
	}
	var es []audit.Entry
	var next uint64
	for {
		page, err := auditPage(ctx, o.clientOptions, next, store.MaxAuditLimit, "")
		if err != nil {
			return fmt.Errorf("listing the log: %w", err)
		}
		es = append(es, page.Entries...)
		if page.Next == 0 {
			break
		}
		next = page.Next
	}
	if err := getJSON(ctx, o.clientOptions, "/v1/audit/head", &after); err != nil {
		return fmt.Errorf("reading the head: %w", err)
	}
	rep := AuditReport{Entries: len(es), Head: before.Head, AppendFailures: after.AppendFailures,
		Problems: append(audit.Verify(es), audit.CheckHead(es, before.Head, after.Head)...)}
	if rep.Problems == nil {
		rep.Problems = []audit.Problem{}
	}
	slices.SortStableFunc(rep.Problems, func(a, b audit.Problem) int { return cmp.Compare(a.Seq, b.Seq) })
	rep.Problems = mergeProblems(rep.Problems)
	bad := len(rep.Problems) > 0 || rep.AppendFailures > 0
	if o.Format == "json" {
		if err := o.print(stdout, rep, nil, nil); err != nil {
			return err
		}
	} else {
		for _, p := range rep.Problems {
			fmt.Fprintln(stdout, p)
		}
		if rep.AppendFailures > 0 {
			fmt.Fprintf(stdout, "the server failed to append %d entries since it started: those changes are missing from the log (see its error log)\n", rep.AppendFailures)
		}
		verdict := "intact"
		if bad {
			verdict = fmt.Sprintf("NOT intact: %d problems", len(rep.Problems))
		}
		fmt.Fprintf(stdout, "%d entries, head seq %d hash %s: %s\n", rep.Entries, rep.Head.Seq, hex.EncodeToString(rep.Head.Hash), verdict)
	}
	if bad {
		return &ExitCodeError{Code: ExitRejected, Err: fmt.Errorf("the audit log failed verification: %d problems, %d failed appends",
			len(rep.Problems), rep.AppendFailures)}
	}
	return nil
}

// mergeProblems joins problems of the same kind about the same seq (the
// chain's and the head's view of one entry) into one.
func mergeProblems(ps []audit.Problem) []audit.Problem {
	out := ps[:0]
	for _, p := range ps {
		if n := len(out); n > 0 && out[n-1].Seq == p.Seq && out[n-1].Kind == p.Kind {
			out[n-1].Detail += "; " + p.Detail
			continue
		}
		out = append(out, p)
	}
	return out
}
