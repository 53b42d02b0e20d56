// Command dialtone-agent is the daemon on each phone.
package main

import (
	"context"
	"os"

	"github.com/dialtone-dev/dialtone/agent/cli"
)

func main() {
	os.Exit(cli.Execute(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
