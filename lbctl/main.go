// Command lbctl is the operator CLI of edgelb. See `lbctl --help`.
package main

import (
	"os"

	"github.com/edgelb/edgelb/lbctl/cli"
)

func main() {
	os.Exit(cli.Execute(os.Args[1:], os.Stdout, os.Stderr))
}
