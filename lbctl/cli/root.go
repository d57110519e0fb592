// Package cli is lbctl's command tree. Execute runs it for main and tests.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/edgelb/edgelb/lbctl/client"
	"github.com/edgelb/edgelb/lbctl/config"
	"github.com/edgelb/edgelb/lbctl/exitcode"
	"github.com/edgelb/edgelb/lbctl/output"
	"github.com/edgelb/edgelb/raft/errinfo"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Version is set at build time: -ldflags "-X github.com/edgelb/edgelb/lbctl/cli.Version=v1.2.3".
var Version = "dev"

const defaultEndpoint = "127.0.0.1:7700"

// app holds the global flags and the state one invocation shares.
type app struct {
	stdout, stderr io.Writer

	endpoints   string
	contextName string
	configPath  string
	timeout     time.Duration
	outputFlag  string
	tenantFlag  string
	caFile      string
	certFile    string
	keyFile     string
	serverName  string
	stale       bool
	// silentThreshold is lbctl status's --silent-threshold.
	silentThreshold time.Duration

	format  output.Format
	tenant  string
	dialOpt client.Options
	conn    *client.Conn
	// staleOnce prints the stale-read warning once per invocation.
	staleOnce sync.Once
	// ran is set once a command's RunE starts: errors before that point are
	// cobra's (unknown command, bad flag, wrong arguments), hence usage errors.
	ran bool
}

// Execute runs lbctl with args and returns the process exit code.
func Execute(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return ExecuteContext(ctx, args, stdout, stderr)
}

// ExecuteContext is Execute ended by ctx instead of a signal, so that a test
// can stop a command that runs until interrupted (watch).
func ExecuteContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a := &app{stdout: stdout, stderr: stderr}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if a.conn != nil {
		a.conn.Close()
	}
	if err == nil {
		return exitcode.OK
	}
	if !a.ran {
		err = exitcode.NewUsage(err)
	}
	msg := exitcode.Message(err)
	if reason := errinfo.Reason(err); reason != "" {
		// The typed reason is what scripts can match on; the text may change.
		msg += " [" + reason + "]"
	}
	fmt.Fprintf(stderr, "Error: %s\n", msg)
	code := exitcode.Code(err)
	if code == exitcode.Usage {
		fmt.Fprintln(stderr, "Run 'lbctl --help' or 'lbctl COMMAND --help' for usage.")
	}
	return code
}

const rootLong = `lbctl drives an edgelb cluster: virtual services (VIPs with their ports and
backends), the address pools VIPs come from, and the cluster members.

Connection: lbctl talks gRPC to any lbd member; followers forward writes to the
leader. With several --endpoints it uses the first that answers. Settings come
from, in order: flags, the LBCTL_ENDPOINTS environment variable (endpoints
only), the selected context of the config file, the defaults.

Security: with none of --ca-file, --cert-file, --key-file, --server-name the
connection is PLAINTEXT (unencrypted, unauthenticated; for a local lab only).
With --ca-file the server is verified; add --cert-file and --key-file for
mutual TLS, which a production cluster requires.

Output: -o table (default) and -o wide are for people; -o json and -o yaml are
for scripts and stable: one object prints as its protojson (lowerCamelCase
fields, unset fields omitted), a list prints as {"items": [...]}.

` + exitcode.Help

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "lbctl",
		Short:         "Operate an edgelb L4 load-balancer cluster",
		Long:          rootLong,
		SilenceErrors: true,
		SilenceUsage:  true,
		Example: `  lbctl vip create web --port tcp/80:30080 --backend 10.0.0.11 --backend 10.0.0.12 --wait
  lbctl vip list -o wide
  lbctl --endpoints lb1:7700,lb2:7700 member status
  LBCTL_ENDPOINTS=lb1:7700 lbctl vip get web -o json`,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Annotations[helpOnly] != "" {
				return nil // a bare group prints its help; it needs no settings
			}
			return a.resolve(cmd)
		},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return exitcode.NewUsage(err) })

	pf := root.PersistentFlags()
	pf.StringVar(&a.endpoints, "endpoints", "", "comma-separated lbd API addresses host:port, tried in order (env LBCTL_ENDPOINTS; default "+defaultEndpoint+")")
	pf.StringVar(&a.contextName, "context", "", "config file context to use (default: the file's current-context)")
	pf.StringVar(&a.configPath, "config", "", "config file (default $XDG_CONFIG_HOME/edgelb/lbctl.yaml or ~/.config/edgelb/lbctl.yaml)")
	pf.DurationVar(&a.timeout, "timeout", 10*time.Second, "time limit for connecting and for each request")
	pf.StringVarP(&a.outputFlag, "output", "o", "table", "output format: table|wide|json|yaml")
	pf.StringVar(&a.tenantFlag, "tenant", "", `tenant of the virtual services (default: the context's tenant, else "default")`)
	pf.StringVar(&a.caFile, "ca-file", "", "CA certificate (PEM) to verify the server; enables TLS (without any TLS flag: PLAINTEXT)")
	pf.StringVar(&a.certFile, "cert-file", "", "client certificate (PEM) for mutual TLS")
	pf.StringVar(&a.keyFile, "key-file", "", "client private key (PEM) for mutual TLS")
	pf.StringVar(&a.serverName, "server-name", "", "name to verify in the server certificate (default: the endpoint's host)")
	pf.BoolVar(&a.stale, "stale", false, "answer reads from the member's own replica even when it has no leader, was removed or has not caught up (may be old; a warning on stderr gives its revision)")
	root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "wide", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))

	root.AddCommand(
		a.vipCmd(), a.backendCmd(), a.poolCmd(), a.memberCmd(), a.leaderCmd(),
		a.watchCmd(), a.configCmd(), a.completionCmd(), a.versionCmd(),
		a.statusCmd(), a.snapshotCmd(), a.tenantCmd(), a.bgpCmd(),
	)
	strictGroups(root)
	return root
}

// synonyms are words an operator types from habit (other CLIs, shells) for a
// command that lbctl names differently; cobra's edit distance alone would not
// suggest "remove" for "rm" or "delete" for "remove".
var synonyms = map[string][]string{
	"delete": {"rm", "del", "remove", "destroy"},
	"remove": {"rm", "del", "delete"},
	"list":   {"ls"},
	"get":    {"show", "describe"},
	"create": {"add", "new"},
	"add":    {"create", "new"},
}

// helpOnly marks a command group whose only action is printing its help.
const helpOnly = "lbctl/help-only"

// strictGroups makes a mistyped subcommand an error. Cobra runs a command
// group that has no Run of its own by printing its help and succeeding, so
// "lbctl vip delet web" exited 0 and a script believed it had deleted
// something. Every command with subcommands now refuses an argument it does
// not know (a usage error, exit 2) and names the nearest subcommands; a bare
// group ("lbctl vip") still prints its help.
func strictGroups(c *cobra.Command) {
	for _, sub := range c.Commands() {
		if extra, ok := synonyms[sub.Name()]; ok {
			sub.SuggestFor = append(sub.SuggestFor, extra...)
		}
		strictGroups(sub)
	}
	if !c.HasSubCommands() && c.Args != nil {
		// cobra's "accepts 1 arg(s), received 2" does not say which
		// arguments: show the command's usage line beside it.
		own := c.Args
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := own(cmd, args); err != nil {
				return exitcode.NewUsage(fmt.Errorf("%w (got %q); usage: %s", err, args, cmd.UseLine()))
			}
			return nil
		}
	}
	if !c.HasSubCommands() || !c.HasParent() {
		return // the root already refuses unknown commands with suggestions
	}
	if c.Run == nil && c.RunE == nil {
		c.RunE = func(cmd *cobra.Command, args []string) error { return cmd.Help() }
		if c.Annotations == nil {
			c.Annotations = map[string]string{}
		}
		c.Annotations[helpOnly] = "true"
	}
	if c.SuggestionsMinimumDistance <= 0 {
		// cobra applies its default of 2 only on the root's own lookup
		c.SuggestionsMinimumDistance = 2
	}
	own := c.Args
	c.Args = func(cmd *cobra.Command, args []string) error {
		if own != nil {
			if err := own(cmd, args); err == nil {
				return nil
			}
		}
		if len(args) == 0 {
			return nil
		}
		return unknownSubcommand(cmd, args[0])
	}
}

// unknownSubcommand is the error for an argument that names no subcommand of
// cmd, with cobra's suggestions ("Did you mean this?") when there are any.
func unknownSubcommand(cmd *cobra.Command, arg string) error {
	msg := fmt.Sprintf("unknown command %q for %q", arg, cmd.CommandPath())
	if s := cmd.SuggestionsFor(arg); len(s) > 0 {
		msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t")
	} else {
		var names []string
		for _, sub := range cmd.Commands() {
			if sub.IsAvailableCommand() {
				names = append(names, sub.Name())
			}
		}
		msg += "; its commands are: " + strings.Join(names, ", ")
	}
	return exitcode.NewUsage(errors.New(msg))
}

// resolve merges flags, environment and config file into the settings used
// by every command.
func (a *app) resolve(cmd *cobra.Command) error {
	f, err := output.ParseFormat(a.outputFlag)
	if err != nil {
		return exitcode.NewUsage(err)
	}
	a.format = f
	if err := positive("--timeout", a.timeout); err != nil {
		return err
	}
	cfg, err := config.Load(a.cfgPath())
	if err != nil {
		return err
	}
	ctxCfg, err := cfg.Select(a.contextName)
	if err != nil {
		if isConfigCmd(cmd) {
			ctxCfg = &config.Context{} // let `config` repair a dangling current-context
		} else {
			return exitcode.NewUsage(err)
		}
	}
	eps := ctxCfg.Endpoints
	if env := os.Getenv("LBCTL_ENDPOINTS"); env != "" {
		eps = splitList(env)
	}
	if a.endpoints != "" {
		eps = splitList(a.endpoints)
	}
	if len(eps) == 0 {
		eps = []string{defaultEndpoint}
	}
	// Checked here, before anything is dialled; not for `config`, which
	// dials nothing and must be able to repair a context saved by hand.
	if !isConfigCmd(cmd) {
		if err := config.CheckEndpoints(eps); err != nil {
			return exitcode.NewUsage(err)
		}
	}
	a.tenant = pick(a.tenantFlag, ctxCfg.Tenant, "default")
	a.dialOpt = client.Options{
		Endpoints:      eps,
		ConnectTimeout: a.timeout,
		CAFile:         pick(a.caFile, ctxCfg.CAFile),
		CertFile:       pick(a.certFile, ctxCfg.CertFile),
		KeyFile:        pick(a.keyFile, ctxCfg.KeyFile),
		ServerName:     pick(a.serverName, ctxCfg.ServerName),
		Stale:          a.stale,
		OnStale:        a.warnStale,
	}
	return nil
}

// warnStale tells the operator, on stderr so that -o json stays parseable,
// that what follows is one replica's view and may be old.
func (a *app) warnStale(si client.StaleInfo) {
	a.staleOnce.Do(func() {
		if si.Reason == "" {
			fmt.Fprintf(a.stderr, "WARNING: --stale: answered from member %s's own replica at revision %s (it had a leader and had caught up)\n", si.Member, si.Revision)
			return
		}
		fmt.Fprintf(a.stderr, "WARNING: stale read (--stale): member %s's own replica at revision %s, which may be older than the cluster's: %s\n", si.Member, si.Revision, si.Reason)
	})
}

func isConfigCmd(cmd *cobra.Command) bool {
	for c := cmd; c != nil; c = c.Parent() {
		if c.Name() == "config" && c.HasParent() && !c.Parent().HasParent() {
			return true
		}
	}
	return false
}

func (a *app) cfgPath() string {
	if a.configPath != "" {
		return a.configPath
	}
	return config.DefaultPath()
}

func pick(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// client connects on first use, so commands that need no server (config,
// completion, help) never dial.
func (a *app) client(ctx context.Context) (*client.Conn, error) {
	if a.conn != nil {
		return a.conn, nil
	}
	c, err := client.Dial(ctx, a.dialOpt)
	if err != nil {
		return nil, err
	}
	a.conn = c
	return c, nil
}

// rpcCtx bounds one request by --timeout.
func (a *app) rpcCtx(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), a.timeout)
}

// run marks the start of a command's own work (see app.ran).
func (a *app) run(f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		a.ran = true
		return f(cmd, args)
	}
}

// usagef is a usage error of our own making (bad flag syntax): exit 2.
func usagef(format string, args ...any) error {
	return exitcode.NewUsage(fmt.Errorf(format, args...))
}

// positive refuses a zero or negative duration flag: a negative time limit
// would end a wait before it began and read as a timeout.
func positive(flag string, d time.Duration) error {
	if d <= 0 {
		return usagef("%s %s: must be positive, e.g. 60s", flag, d)
	}
	return nil
}

// changed reports whether the flag was given on the command line.
func changed(fs *pflag.FlagSet, name string) bool {
	f := fs.Lookup(name)
	return f != nil && f.Changed
}
