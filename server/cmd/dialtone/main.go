// Command dialtone is the operator binary: the server and the commands that
// operators and CI pipelines run against it.
package main

import (
	"context"
	"os"

	"github.com/dialtone-dev/dialtone/server/cli"
)

func main() {
	os.Exit(cli.Execute(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
