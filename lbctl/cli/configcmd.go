package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/edgelb/edgelb/lbctl/config"
	"github.com/edgelb/edgelb/lbctl/exitcode"
	"github.com/edgelb/edgelb/lbctl/output"
	"github.com/spf13/cobra"
)

func (a *app) configCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "config",
		Short: "Manage named contexts in the config file (no server needed)",
		Long: `Manage named contexts. A context remembers endpoints, tenant and TLS files, so
that "lbctl --context prod ..." (or the current context) needs no other flags.
The file is --config (default $XDG_CONFIG_HOME/edgelb/lbctl.yaml or
~/.config/edgelb/lbctl.yaml). Relative TLS paths in it are relative to the file.`,
		Example: `  lbctl config set-context prod --endpoints lb1:7700,lb2:7700,lb3:7700 --tenant ops \
      --ca-file /etc/edgelb/ca.pem --cert-file me.pem --key-file me-key.pem
  lbctl config use-context prod
  lbctl config get-contexts`,
	}
	c.AddCommand(a.setContextCmd(), a.useContextCmd(), a.getContextsCmd(), a.currentContextCmd(), a.deleteContextCmd())
	return c
}

func (a *app) setContextCmd() *cobra.Command {
	var use bool
	c := &cobra.Command{
		Use:   "set-context NAME [--endpoints ...] [--tenant ...] [--ca-file ...] [--cert-file ...] [--key-file ...] [--server-name ...]",
		Short: "Create or change a context (only the fields whose flags are given)",
		Example: `  lbctl config set-context lab --endpoints 127.0.0.1:7700 --use
  lbctl config set-context prod --tenant cluster-a`,
		Args: cobra.ExactArgs(1),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			if err := config.CheckContextName(args[0]); err != nil {
				return exitcode.NewUsage(err)
			}
			fs := cmd.Flags()
			if changed(fs, "endpoints") {
				// Checked before saving: a context that cannot be dialled
				// would otherwise fail later, far from this typo.
				if err := config.CheckEndpoints(splitList(a.endpoints)); err != nil {
					return exitcode.NewUsage(err)
				}
			}
			path := a.cfgPath()
			f, err := config.Load(path)
			if err != nil {
				return err
			}
			ctx := f.Contexts[args[0]]
			if ctx == nil {
				ctx = &config.Context{}
				f.Contexts[args[0]] = ctx
			}
			// The global connection flags double as the context's fields.
			if changed(fs, "endpoints") {
				ctx.Endpoints = splitList(a.endpoints)
			}
			set := func(flag string, dst *string, v string) {
				if changed(fs, flag) {
					*dst = v
				}
			}
			set("tenant", &ctx.Tenant, a.tenantFlag)
			set("ca-file", &ctx.CAFile, a.caFile)
			set("cert-file", &ctx.CertFile, a.certFile)
			set("key-file", &ctx.KeyFile, a.keyFile)
			set("server-name", &ctx.ServerName, a.serverName)
			if use || f.CurrentContext == "" {
				f.CurrentContext = args[0]
			}
			if err := config.Save(path, f); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "context %s saved in %s\n", args[0], path)
			return nil
		}),
	}
	c.Flags().BoolVar(&use, "use", false, "also make it the current context")
	return c
}

func (a *app) useContextCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "use-context NAME",
		Short:             "Make a context the current one",
		Example:           `  lbctl config use-context prod`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeContexts,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			path := a.cfgPath()
			f, err := config.Load(path)
			if err != nil {
				return err
			}
			if _, ok := f.Contexts[args[0]]; !ok {
				return usagef("context %q not found; known: %s", args[0], strings.Join(f.Names(), ", "))
			}
			f.CurrentContext = args[0]
			if err := config.Save(path, f); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "switched to context %s\n", args[0])
			return nil
		}),
	}
}

func (a *app) deleteContextCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "delete-context NAME",
		Short:             "Remove a context",
		Example:           `  lbctl config delete-context old-lab`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeContexts,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			path := a.cfgPath()
			f, err := config.Load(path)
			if err != nil {
				return err
			}
			if _, ok := f.Contexts[args[0]]; !ok {
				return usagef("context %q not found", args[0])
			}
			delete(f.Contexts, args[0])
			if f.CurrentContext == args[0] {
				f.CurrentContext = ""
			}
			if err := config.Save(path, f); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "context %s deleted\n", args[0])
			return nil
		}),
	}
}

func (a *app) getContextsCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "get-contexts",
		Short:   "List the contexts; * marks the current one",
		Example: `  lbctl config get-contexts -o yaml`,
		Args:    cobra.NoArgs,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			f, err := config.Load(a.cfgPath())
			if err != nil {
				return err
			}
			if a.format.Machine() {
				return output.Value(a.stdout, a.format, f)
			}
			tw := output.TableWriter(a.stdout)
			output.Row(tw, "CURRENT", "NAME", "ENDPOINTS", "TENANT", "TLS")
			for _, n := range f.Names() {
				c := f.Contexts[n]
				cur, tls := "", "plaintext"
				if n == f.CurrentContext {
					cur = "*"
				}
				if c.CAFile != "" || c.CertFile != "" {
					tls = "tls"
					if c.CertFile != "" {
						tls = "mtls"
					}
				}
				output.Row(tw, cur, n, strings.Join(c.Endpoints, ","), c.Tenant, tls)
			}
			return tw.Flush()
		}),
	}
}

func (a *app) currentContextCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "current-context",
		Short:   "Print the current context's name",
		Example: `  lbctl config current-context`,
		Args:    cobra.NoArgs,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			f, err := config.Load(a.cfgPath())
			if err != nil {
				return err
			}
			if f.CurrentContext == "" {
				return errors.New("no current context; set one with `lbctl config use-context NAME`")
			}
			fmt.Fprintln(a.stdout, f.CurrentContext)
			return nil
		}),
	}
}

func (a *app) completeContexts(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	f, err := config.Load(a.cfgPath())
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return f.Names(), cobra.ShellCompDirectiveNoFileComp
}
