// Command umlrun runs a command inside a User-Mode Linux guest with real IPVS,
// netfilter, veth, bridge and network namespaces, and exits with the command's exit
// code. See docs/SANDBOX.md.
//
//	go run ./integration/cmd/umlrun [-mem 1024M] [-timeout 10m] [-keep] -- CMD [ARGS...]
//
// The guest's root is the host's (hostfs), so CMD is any host binary or script; the
// working directory and environment are passed through. umlrun exits 125 when the
// guest could not report the command's exit code (boot failure, timeout).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/edgelb/edgelb/integration/uml"
)

func main() {
	uml.MaybeGuestInit()

	mem := flag.String("mem", "1024M", "guest RAM")
	timeout := flag.Duration("timeout", 10*time.Minute, "limit for the whole run (0: none)")
	grace := flag.Duration("grace", 10*time.Second, "on Ctrl-C or timeout: time between SIGINT to the command and killing the guest")
	keep := flag.Bool("keep", false, "keep the work directory (console log) and print its path")
	workdir := flag.String("workdir", "", "work directory on the host (default: a new temp dir)")
	modules := flag.String("modules", "", "extra kernel features (module names) the guest kernel must have built in, comma-separated")
	verbose := flag.Bool("v", false, "print boot time and the console log path")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: umlrun [flags] -- CMD [ARGS...]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	o := uml.Options{
		Argv: flag.Args(), Mem: *mem, Timeout: *timeout, Grace: *grace,
		Stdout: os.Stdout, Stderr: os.Stderr,
		KeepWorkDir: *keep || *verbose, WorkDir: *workdir,
	}
	if *modules != "" {
		o.ExtraModules = strings.Split(*modules, ",")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := uml.Run(ctx, o)
	if *verbose || *keep {
		fmt.Fprintf(os.Stderr, "umlrun: boot %s, total %s, console %s\n", res.BootTime.Round(time.Millisecond), res.Duration.Round(time.Millisecond), res.ConsoleLog)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "umlrun:", err)
		os.Exit(125)
	}
	if res.Stopped != "" {
		fmt.Fprintln(os.Stderr, "umlrun:", res.Stopped)
	}
	os.Exit(res.ExitCode)
}
