package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"github.com/dialtone-dev/dialtone/internal/atomicfile"
	"github.com/dialtone-dev/dialtone/server/broker"
	"github.com/spf13/cobra"
)

// mosquittoConfigOptions are the flags of `dialtone broker mosquitto-config`.
type mosquittoConfigOptions struct {
	outputOptions
	Out               string
	CA, Cert, Key     string
	CRL               string
	Port              int
	Bind              string
	ServerIdentities  []string
	PersistenceDir    string
	LogFile           string
	LogDenials        bool
	AutosaveInterval  time.Duration
	MaxQueuedMessages int
	Owner             string
	Force             bool
}

func (o *mosquittoConfigOptions) AddFlags(cmd *cobra.Command) {
	o.outputOptions.AddFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&o.Out, "out", "", "directory to write mosquitto.conf and acl into (created if missing)")
	f.StringVar(&o.CA, "ca", "", "CA certificate (PEM) that issues device and server client certificates")
	f.StringVar(&o.Cert, "cert", "", "the broker's TLS certificate (PEM)")
	f.StringVar(&o.Key, "key", "", "the broker's TLS private key (PEM)")
	f.StringVar(&o.CRL, "crl", "", "optional CRL (PEM) of revoked client certificates")
	f.IntVar(&o.Port, "port", broker.DefaultMosquittoPort, "TLS listener port")
	f.StringVar(&o.Bind, "bind", "", "address to listen on (default all)")
	f.StringSliceVar(&o.ServerIdentities, "server-identity", []string{broker.DefaultServerIdentity}, "CN of a server client certificate, one per replica (repeatable)")
	f.StringVar(&o.PersistenceDir, "persistence-dir", "/var/lib/mosquitto", "directory for Mosquitto's database (queued reports, retained states)")
	f.StringVar(&o.LogFile, "log-file", "/var/log/mosquitto/mosquitto.log", "Mosquitto's log file, which the server watches for denials")
	f.BoolVar(&o.LogDenials, "log-denials", true, "log at debug level, the only one at which Mosquitto 2.0 logs denied publishes (verbose: rotate the log)")
	f.DurationVar(&o.AutosaveInterval, "autosave-interval", broker.DefaultAutosaveInterval, "how often Mosquitto saves its database: a broker crash loses what was queued since")
	f.IntVar(&o.MaxQueuedMessages, "max-queued-messages", broker.DefaultMaxQueuedMessages, "QoS 1 messages queued per disconnected client before Mosquitto drops them")
	f.StringVar(&o.Owner, "owner", "", "user to give the acl file to (Mosquitto reads it as the user it runs as, usually mosquitto; needs root)")
	f.BoolVar(&o.Force, "force", false, "overwrite existing files")
}

func (o *mosquittoConfigOptions) Validate() error {
	if err := o.outputOptions.Validate(); err != nil {
		return err
	}
	switch {
	case o.Out == "":
		return errors.New("--out is required")
	case o.CA == "" || o.Cert == "" || o.Key == "":
		return errors.New("--ca, --cert and --key are required")
	case o.Port < 1 || o.Port > 65535:
		return fmt.Errorf("--port %d: out of range 1-65535", o.Port)
	case o.AutosaveInterval < time.Second:
		return fmt.Errorf("--autosave-interval %s: at least 1s", o.AutosaveInterval)
	case o.MaxQueuedMessages < 1:
		return fmt.Errorf("--max-queued-messages %d: at least 1", o.MaxQueuedMessages)
	}
	return nil
}

// writtenFile is one file mosquitto-config wrote.
type writtenFile struct {
	Path    string `json:"path"`
	Mode    string `json:"mode"`
	Content string `json:"content"`
}

// mosquittoConfigResult is what mosquitto-config prints with -o json.
type mosquittoConfigResult struct {
	Files   []writtenFile `json:"files"`
	Command string        `json:"command"`
}

func brokerCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "broker", Short: "Set up an external MQTT broker for the devices' reports"}
	o := &mosquittoConfigOptions{}
	mc := &cobra.Command{
		Use:   "mosquitto-config",
		Short: "Write a Mosquitto 2.x configuration and ACL: client certificates, per-device topics, persistence",
		Long: `Writes mosquitto.conf and acl into --out for a Mosquitto 2.x broker that
authenticates devices and the server by client certificate (the CN is the
device ID, or a server identity) and lets each device publish only its own
state, events and telemetry and receive only its own commands.

Differences from the embedded broker: Mosquitto grants every subscription
and only withholds what the client may not read; a refused publish is
dropped without telling an MQTT 3.1.1 client; denials are logged only at
debug level (--log-denials). The server watches the log for them.`,
		Args: cobra.NoArgs,
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			// DIALTONE_KEY and a config file's "key" name the publisher's
			// signing key: only the command line may name these files.
			// DIALTONE_CA and "ca" name the CA of the API server for
			// the client commands: not this one's.
			if f := cmd.Flags().Lookup("ca"); !f.Changed {
				o.CA = ""
			}
			for _, name := range []string{"ca", "cert", "key"} {
				if f := cmd.Flags().Lookup(name); f.Value.String() != "" && !f.Changed {
					return firstUsageError(fmt.Errorf("--%s must be given on the command line, not by the environment or config file", name))
				}
			}
			return firstUsageError(o.Validate())
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := writeMosquittoConfig(o)
			if err != nil {
				return err
			}
			return printMosquittoConfig(g.stdout, g.stderr, o, res)
		},
	}
	o.AddFlags(mc)
	cmd.AddCommand(mc)
	return cmd
}

// writeMosquittoConfig generates and writes the files.
func writeMosquittoConfig(o *mosquittoConfigOptions) (res *mosquittoConfigResult, err error) {
	out, err := filepath.Abs(o.Out)
	if err != nil {
		return nil, err
	}
	confPath, aclPath := filepath.Join(out, "mosquitto.conf"), filepath.Join(out, "acl")
	if !o.Force {
		for _, p := range []string{confPath, aclPath} {
			if _, err := os.Stat(p); err == nil {
				return nil, &ExitCodeError{Code: ExitUsage, Err: fmt.Errorf("%s exists (use --force to overwrite)", p)}
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
		}
	}
	uid, gid := -1, -1
	if o.Owner != "" {
		u, err := user.Lookup(o.Owner)
		if err != nil {
			return nil, &ExitCodeError{Code: ExitUsage, Err: fmt.Errorf("--owner: %w", err)}
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
	}
	if _, err := os.Stat(out); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(out, 0o755); err != nil {
			return nil, fmt.Errorf("creating %s: %w", out, err)
		}
		defer func() {
			if res == nil {
				_ = os.Remove(out) // created for nothing; removed only if empty
			}
		}()
	}
	conf, acl, err := broker.MosquittoConfig(broker.MosquittoOptions{
		Port:              o.Port,
		Bind:              o.Bind,
		CAFile:            o.CA,
		CertFile:          o.Cert,
		KeyFile:           o.Key,
		CRLFile:           o.CRL,
		ServerIdentities:  o.ServerIdentities,
		ACLFile:           aclPath,
		PersistenceDir:    o.PersistenceDir,
		LogFile:           o.LogFile,
		LogDenials:        o.LogDenials,
		AutosaveInterval:  o.AutosaveInterval,
		MaxQueuedMessages: o.MaxQueuedMessages,
	})
	if errors.Is(err, broker.ErrMosquittoOptions) {
		return nil, &ExitCodeError{Code: ExitUsage, Err: err}
	}
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(aclPath, []byte(acl), 0o600); err != nil {
		return nil, fmt.Errorf("writing %s: %w", aclPath, err)
	}
	if uid >= 0 {
		if err := os.Chown(aclPath, uid, gid); err != nil {
			return nil, fmt.Errorf("giving %s to %s: %w", aclPath, o.Owner, err)
		}
	}
	if err := atomicfile.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("writing %s: %w", confPath, err)
	}
	return &mosquittoConfigResult{
		Files: []writtenFile{
			{Path: confPath, Mode: "0644", Content: "Mosquitto configuration"},
			{Path: aclPath, Mode: "0600", Content: "ACL: devices' own topics; server identities"},
		},
		Command: "mosquitto -c " + confPath,
	}, nil
}

func printMosquittoConfig(stdout, stderr io.Writer, o *mosquittoConfigOptions, res *mosquittoConfigResult) error {
	if o.Format == "json" {
		return o.print(stdout, res, nil, nil)
	}
	rows := make([][]string, 0, len(res.Files))
	for _, f := range res.Files {
		rows = append(rows, []string{f.Path, f.Mode, f.Content})
	}
	if err := o.print(stdout, res, []string{"WROTE", "MODE", "CONTENT"}, rows); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nrun: %s\n", res.Command)
	if o.Owner == "" {
		fmt.Fprintf(stderr, "note: Mosquitto reads the acl file after switching to its user (usually mosquitto): "+
			"chown it to that user (--owner), which must also read %s and write %s and %s\n",
			o.Key, o.PersistenceDir, filepath.Dir(o.LogFile))
	}
	return nil
}
