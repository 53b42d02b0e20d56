// Package cliconfig owns how both binaries read their settings: a flag on
// the command line wins, then an environment variable (PREFIX_FLAG_NAME),
// then one YAML file, then the flag's default.
package cliconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// MaxFileBytes bounds the configuration file.
const MaxFileBytes = 1 << 20

// EnvName is the variable that sets a flag: DIALTONE_SERVER for --server.
func EnvName(prefix, flag string) string {
	return prefix + "_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// ParseFile reads a flat YAML mapping of flag names to values (scalars or
// lists of scalars).
func ParseFile(r io.Reader) (map[string][]string, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxFileBytes {
		return nil, fmt.Errorf("config file exceeds %d bytes", MaxFileBytes)
	}
	var raw map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&raw); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parsing config: %w", err)
	}
	out := map[string][]string{}
	for k, v := range raw {
		switch v := v.(type) {
		case []any:
			for _, e := range v {
				if !scalar(e) {
					return nil, fmt.Errorf("config key %q: lists may hold only scalars", k)
				}
				out[k] = append(out[k], fmt.Sprint(e))
			}
		default:
			if !scalar(v) {
				return nil, fmt.Errorf("config key %q: want a scalar or a list", k)
			}
			out[k] = []string{fmt.Sprint(v)}
		}
	}
	return out, nil
}

func scalar(v any) bool {
	switch v.(type) {
	case string, bool, int, int64, uint64, float64:
		return true
	}
	return false
}

// Apply fills every flag of cmd that was not given on the command line from
// the environment, then from file (may be nil). Unknown keys in file are an
// error only when no command in the tree knows them; here they are ignored
// per command, since one file serves every subcommand.
func Apply(cmd *cobra.Command, prefix string, file map[string][]string) error {
	var errs []error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "help" || f.Name == "config" {
			return
		}
		if v, ok := os.LookupEnv(EnvName(prefix, f.Name)); ok {
			if err := setAll(f, []string{v}); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", EnvName(prefix, f.Name), err))
			}
			return
		}
		if vs, ok := file[f.Name]; ok {
			if err := setAll(f, vs); err != nil {
				errs = append(errs, fmt.Errorf("config %s: %w", f.Name, err))
			}
		}
	})
	return errors.Join(errs...)
}

func setAll(f *pflag.Flag, vs []string) error {
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		var parts []string
		for _, v := range vs {
			parts = append(parts, strings.Split(v, ",")...)
		}
		return sv.Replace(parts)
	}
	if len(vs) != 1 {
		return errors.New("want one value")
	}
	return f.Value.Set(vs[0])
}

// Load reads the config file at path; a missing file is not an error when
// required is false.
func Load(path string, required bool) (map[string][]string, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) && !required {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	defer f.Close()
	return ParseFile(f)
}
