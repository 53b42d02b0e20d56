// Package cli owns the `dialtone` command tree: the server, and the client
// commands operators and CI pipelines run (firmware, keys, devices, tuf).
// Each command has one options struct; RunE only plumbs flags into it and
// calls a function that does the work.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/dialtone-dev/dialtone/firmware/publish"
	"github.com/dialtone-dev/dialtone/internal/cliconfig"
	"github.com/spf13/cobra"
)

// Exit codes of the dialtone binary.
const (
	ExitOK       = 0
	ExitError    = 1
	ExitUsage    = 2
	ExitRejected = 3 // the server or a verification refused the input
)

// ExitError carries an exit code out of a command.
type ExitCodeError struct {
	Code int
	Err  error
}

func (e *ExitCodeError) Error() string { return e.Err.Error() }
func (e *ExitCodeError) Unwrap() error { return e.Err }

// globalOptions are the flags every command has.
type globalOptions struct {
	Config   string
	LogLevel string
	stdout   io.Writer
	stderr   io.Writer
}

func (g *globalOptions) logger() *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.LogLevel)); err != nil {
		lvl = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: lvl}))
}

func defaultConfigPath() string {
	if p := os.Getenv("DIALTONE_CONFIG"); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "dialtone", "config.yaml")
}

// New returns the root command.
func New(stdout, stderr io.Writer) *cobra.Command {
	g := &globalOptions{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "dialtone",
		Short:         "Dialtone keeps IP desk phones on signed firmware and proves it with their TPMs",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			explicit := cmd.Flags().Changed("config") || os.Getenv("DIALTONE_CONFIG") != ""
			path := g.Config
			if path == "" {
				path = defaultConfigPath()
			}
			file, err := cliconfig.Load(path, explicit)
			if err != nil {
				return &ExitCodeError{Code: ExitUsage, Err: err}
			}
			if err := cliconfig.Apply(cmd, "DIALTONE", file); err != nil {
				return &ExitCodeError{Code: ExitUsage, Err: err}
			}
			return nil
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.Config, "config", "", "YAML config file (default $DIALTONE_CONFIG or ~/.config/dialtone/config.yaml)")
	root.PersistentFlags().StringVar(&g.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	devices := devicesCmd(g)
	devices.AddCommand(devicesSIPPasswordCmd(g))
	root.AddCommand(serverCmd(g), firmwareCmd(g), keysCmd(g), devices, tufCmd(g), tokensCmd(g))
	root.AddCommand(configCmd(g))
	root.AddCommand(brokerCmd(g))
	root.AddCommand(fleetCmd(g))
	root.AddCommand(alertsCmd(g))
	root.AddCommand(loginCmd(g), logoutCmd(g), usersCmd(g))
	root.AddCommand(auditCmd(g))
	return root
}

// Execute runs the command line and returns the process exit code.
func Execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := New(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(stderr, "dialtone:", err)
	var ec *ExitCodeError
	if errors.As(err, &ec) {
		return ec.Code
	}
	// A check the server names refused the input; anything else (network,
	// files) is a plain error.
	var se *publish.ServerError
	if errors.As(err, &se) && se.Check != "" {
		return ExitRejected
	}
	return ExitError
}
