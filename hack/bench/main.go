// Command bench is the driver behind `make bench` (hack/bench.sh). Every
// figure is measured against a reference in the same run, interleaved with
// it round by round, and judged by the ratio of the two:
//
//   - tuf: update-check throughput of `dialtone server --dev` (a process)
//     for GET /tuf/metadata/timestamp.json, conditional (304) and plain
//     (200), against net/http.FileServer over the same repository directory
//     in a second process with the same http.Server settings. The load
//     comes from this process: N keep-alive connections speaking raw
//     HTTP/1.1 over TLS (both servers HTTPS with the same certificate), one
//     request in flight on each, for a fixed time.
//   - bundle: `dialtone firmware build` and `dialtone firmware verify` of a
//     bundle with one large payload, against sha256sum over the same file.
//   - publish: peak RSS (VmHWM) of a fresh `dialtone server --dev` and of
//     the `dialtone firmware publish` client while the bundle is published.
//   - install: `dialtone-agent --once` installing the bundle from a dev
//     server against `curl -o /dev/null` + sha256sum of the same file, the
//     agent's peak RSS during it, and its RSS idle in daemon mode.
//   - sizes: the stripped linux/arm64 and linux/arm dialtone-agent (no
//     target yet).
//   - ingest: QoS 1 events from N in-process MQTT clients through the
//     embedded broker into fleet.Ingester and the store (SQLite, and
//     PostgreSQL reported), against the same broker delivering them to a
//     subscriber that discards them (ingest.go).
//   - list: `devices list` with filters over 100,000 devices against an
//     export of all of them, SQLite and PostgreSQL (list.go).
//   - authz: an API request with token authentication and authorization
//     against the same handler without them, in-process (authz.go).
//   - password: one argon2id password verification with the server's
//     parameters, judged against 50-500 ms (password.go).
//
// Usage: bench -dialtone bin/dialtone -workdir DIR [flags]; see -h.
// `bench tufprof` profiles the /tuf/ handler in-process (see profile.go);
// `bench fileserver` is the reference server process the tuf benchmark
// starts. ./rusage is the wrapper that measures the publish client.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

type config struct {
	dialtone      string
	agentArm64    string
	agentArm      string
	agent         string
	installRounds int
	workdir       string
	rusage        string
	only          map[string]bool
	conns         int
	rounds        int
	warmup        time.Duration
	duration      time.Duration
	bundleMiB     int
	buildRounds   int
	postgres      string
	ingestDevices int
	ingestEvents  int
	ingestWindow  int
	ingestRounds  int
	ingestBatch   int
	listRounds    int
	authzRounds   int
	cpuProfile    string
}

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "fileserver":
			fileServerMain(os.Args[2:])
			return
		case "tufprof":
			if err := tufProfMain(os.Args[2:]); err != nil {
				fmt.Fprintln(os.Stderr, "bench tufprof:", err)
				os.Exit(2)
			}
			return
		}
	}
	var cfg config
	var only string
	flag.StringVar(&cfg.dialtone, "dialtone", "bin/dialtone", "dialtone binary under test")
	flag.StringVar(&cfg.agentArm64, "agent-arm64", "bin/linux-arm64/dialtone-agent", "linux/arm64 agent binary")
	flag.StringVar(&cfg.agentArm, "agent-arm", "bin/linux-arm/dialtone-agent", "linux/arm agent binary")
	flag.StringVar(&cfg.agent, "agent", "bin/dialtone-agent", "dialtone-agent binary for this machine (install)")
	flag.IntVar(&cfg.installRounds, "install-rounds", 3, "install: interleaved rounds")
	flag.StringVar(&cfg.rusage, "rusage", "", "the rusage wrapper, built from ./hack/bench/rusage (required for publish)")
	flag.StringVar(&cfg.workdir, "workdir", "", "scratch directory for data dirs and the big files (required; emptied of what bench created)")
	flag.StringVar(&only, "only", "tuf,bundle,publish,install,sizes,ingest,list,authz,password,attest,voip", "comma-separated benchmarks to run")
	flag.IntVar(&cfg.conns, "conns", 64, "tuf: concurrent keep-alive connections")
	flag.IntVar(&cfg.rounds, "rounds", 10, "tuf: interleaved rounds (each measures ours and the reference, 304 and 200)")
	flag.DurationVar(&cfg.warmup, "warmup", 300*time.Millisecond, "tuf: unmeasured warm-up of each run")
	flag.DurationVar(&cfg.duration, "duration", time.Second, "tuf: measured time of each run")
	flag.IntVar(&cfg.bundleMiB, "bundle-mib", 512, "bundle: payload size in MiB (also the bundle published)")
	flag.IntVar(&cfg.buildRounds, "bundle-rounds", 6, "bundle: interleaved rounds")
	flag.StringVar(&cfg.postgres, "postgres", postgresDSN(), "ingest, list: PostgreSQL server (a schema is made and dropped per run); default $DIALTONE_TEST_POSTGRES")
	flag.IntVar(&cfg.ingestDevices, "ingest-devices", 50, "ingest: publishing devices (one MQTT connection each)")
	flag.IntVar(&cfg.ingestEvents, "ingest-events", 400, "ingest: QoS 1 events each device publishes per run")
	flag.IntVar(&cfg.ingestWindow, "ingest-window", 16, "ingest: unacknowledged publishes per device")
	flag.IntVar(&cfg.ingestRounds, "ingest-rounds", 3, "ingest: interleaved rounds (reference, SQLite, PostgreSQL)")
	flag.IntVar(&cfg.ingestBatch, "ingest-batch", 0, "ingest: fleet.Options.MaxBatch (0: the default; 1: no batching)")
	flag.IntVar(&cfg.listRounds, "list-rounds", 5, "list: interleaved rounds (filtered lists, export)")
	flag.IntVar(&cfg.authzRounds, "authz-rounds", 7, "authz: interleaved rounds (with and without auth)")
	flag.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (what runs in-process: ingest, list) to `file`")
	flag.Parse()
	if cfg.workdir == "" {
		fmt.Fprintln(os.Stderr, "bench: -workdir is required")
		os.Exit(2)
	}
	cfg.only = map[string]bool{}
	for _, s := range strings.Split(only, ",") {
		cfg.only[strings.TrimSpace(s)] = true
	}
	var err error
	cfg.agent, _ = filepath.Abs(cfg.agent)
	if cfg.dialtone, err = filepath.Abs(cfg.dialtone); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	stopProfile := func() {}
	if cfg.cpuProfile != "" {
		if stopProfile, err = startCPUProfile(cfg.cpuProfile); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(2)
		}
	}
	rows, err := run(cfg)
	stopProfile() // before any os.Exit
	fmt.Println()
	printTable(os.Stdout, rows)
	fmt.Println("\nVALUE and REFERENCE are medians over the rounds; a judged RATIO is the median of the per-round ratios")
	fmt.Println("(subject and reference back to back, alternating which goes first), or peak RSS / bundle size.")
	fmt.Println("Indented rows explain the judged row above them and have no target. \"k/n rounds miss\": rounds whose")
	fmt.Println("own ratio missed the target although the median met it (a fragile verdict on a busy machine).")
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("Load average at the end: %s", b)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "\nbench: error:", err)
		os.Exit(2)
	}
	failed := slices.ContainsFunc(rows, func(r row) bool { return r.judged() && !r.pass() })
	if failed {
		fmt.Println("\nbench: FAIL: at least one target missed")
		os.Exit(1)
	}
	fmt.Println("\nbench: PASS: every target met")
}

func run(cfg config) ([]row, error) {
	var rows []row
	step := func(name string, f func() ([]row, error)) error {
		t0 := time.Now()
		r, err := f()
		rows = append(rows, r...)
		logf("   (%s took %s)", name, time.Since(t0).Round(100*time.Millisecond))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}
	if cfg.only["tuf"] {
		if err := step("tuf", func() ([]row, error) { return benchTUF(cfg) }); err != nil {
			return rows, err
		}
	}
	var bundle string
	if cfg.only["bundle"] || cfg.only["publish"] || cfg.only["install"] {
		dir := filepath.Join(cfg.workdir, "bundle")
		defer os.RemoveAll(dir)
		err := step("bundle", func() (r []row, err error) {
			r, bundle, err = benchBundle(cfg, dir)
			return r, err
		})
		if err != nil {
			return rows, err
		}
	}
	if cfg.only["publish"] {
		if err := step("publish", func() ([]row, error) { return benchPublish(cfg, bundle) }); err != nil {
			return rows, err
		}
	}
	if cfg.only["install"] {
		if err := step("install", func() ([]row, error) { return benchInstall(cfg, bundle) }); err != nil {
			return rows, err
		}
	}
	if cfg.only["sizes"] {
		if err := step("sizes", func() ([]row, error) { return agentSizes(cfg) }); err != nil {
			return rows, err
		}
	}
	if cfg.only["ingest"] {
		if err := step("ingest", func() ([]row, error) { return benchIngest(cfg) }); err != nil {
			return rows, err
		}
	}
	if cfg.only["list"] {
		if err := step("list", func() ([]row, error) { return benchList(cfg) }); err != nil {
			return rows, err
		}
	}
	if cfg.only["authz"] {
		if err := step("authz", func() ([]row, error) { return benchAuthz(cfg) }); err != nil {
			return rows, err
		}
	}
	if cfg.only["password"] {
		if err := step("password", func() ([]row, error) { return benchPassword(cfg) }); err != nil {
			return rows, err
		}
	}
	if cfg.only["attest"] {
		if err := step("attest", func() ([]row, error) { return benchAttest(cfg) }); err != nil {
			return rows, err
		}
	}
	if cfg.only["voip"] {
		if err := step("voip", func() ([]row, error) { return benchVoip(cfg) }); err != nil {
			return rows, err
		}
	}
	return rows, nil
}

func logf(format string, args ...any) {
	fmt.Printf(format+"\n", args...)
}
