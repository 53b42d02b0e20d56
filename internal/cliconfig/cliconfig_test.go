package cliconfig

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func newCmd() (*cobra.Command, *string, *[]string) {
	var server string
	var tags []string
	c := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
	c.Flags().StringVar(&server, "server", "default", "")
	c.Flags().StringSliceVar(&tags, "tag", nil, "")
	return c, &server, &tags
}

func TestPrecedence(t *testing.T) {
	file, err := ParseFile(strings.NewReader("server: from-file\ntag: [a, b]\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, flag, env, want string
	}{
		{"flag wins", "from-flag", "from-env", "from-flag"},
		{"env beats file", "", "from-env", "from-env"},
		{"file beats default", "", "", "from-file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, server, tags := newCmd()
			if tt.env != "" {
				t.Setenv("DIALTONE_SERVER", tt.env)
			}
			args := []string{}
			if tt.flag != "" {
				args = append(args, "--server", tt.flag)
			}
			if err := c.ParseFlags(args); err != nil {
				t.Fatal(err)
			}
			if err := Apply(c, "DIALTONE", file); err != nil {
				t.Fatal(err)
			}
			if *server != tt.want {
				t.Fatalf("server = %q, want %q", *server, tt.want)
			}
			if strings.Join(*tags, ",") != "a,b" {
				t.Fatalf("tags = %v", *tags)
			}
		})
	}
}

func TestParseFileErrors(t *testing.T) {
	for _, in := range []string{"server: {a: 1}\n", "tag: [[1]]\n", ": : :\n", strings.Repeat("a", MaxFileBytes+1)} {
		if _, err := ParseFile(strings.NewReader(in)); err == nil {
			t.Errorf("ParseFile(%.20q) succeeded, want error", in)
		}
	}
}

func FuzzParseFile(f *testing.F) {
	f.Add("server: x\n")
	f.Add("tag: [a, 1, true]\n")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseFile(strings.NewReader(s))
		if err == nil && m == nil {
			t.Fatal("nil map without error")
		}
	})
}
