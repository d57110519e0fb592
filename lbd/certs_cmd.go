package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgelb/edgelb/lbd/certs"
)

func certsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Create the cluster CA and issue member, admin, operator, viewer and cloud-provider certificates",
		Long: `Every lbd member, lbctl user and cloud provider authenticates with a certificate
from the cluster CA. The role and name live in the certificate (URI SAN
edgelb://<role>/<name>); a cloud-provider certificate's name is its tenant, and
it sees and changes only that tenant's virtual services.

Certificates are written as NAME.crt and NAME.key; lbd reloads its own when the
files change, so rotating is: issue a new one with --force over the old files.`,
		Example: `  lbd certs ca --out /etc/edgelb/ca
  lbd certs issue --ca /etc/edgelb/ca --role member --name edge1 --host 10.0.0.11 --out /etc/edgelb
  lbd certs issue --ca /etc/edgelb/ca --role admin --name alice --out ~/.config/edgelb
  lbd certs issue --ca /etc/edgelb/ca --role cloud-provider --name cluster-a --out ./ccm
  lbd certs issue --ca /etc/edgelb/ca --role viewer --name grafana --out ./viewer`,
	}
	var out, name string
	var validity time.Duration
	ca := &cobra.Command{
		Use:   "ca",
		Short: "Create a new cluster CA (ca.crt, ca.key)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if validity <= 0 {
				return fmt.Errorf("--validity %s: must be positive, e.g. 87600h", validity)
			}
			c, err := certs.NewCA(name, validity)
			if err != nil {
				return err
			}
			if err := c.Save(out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "CA written to %s (keep ca.key offline; distribute ca.crt)\n", filepath.Join(out, "ca.crt"))
			return nil
		},
	}
	ca.Flags().StringVar(&out, "out", ".", "directory to write ca.crt and ca.key into")
	ca.Flags().StringVar(&name, "name", "edgelb CA", "the CA's common name")
	ca.Flags().DurationVar(&validity, "validity", 10*365*24*time.Hour, "how long the CA is valid")

	var caDir, role, iname, iout string
	var hosts []string
	var force bool
	var ivalidity time.Duration
	issue := &cobra.Command{
		Use:   "issue",
		Short: "Issue a certificate signed by the CA",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Everything is checked before the CA key is read or a file is
			// written: a bad request leaves nothing behind.
			if ivalidity <= 0 {
				return fmt.Errorf("--validity %s: must be positive, e.g. 8760h for a year", ivalidity)
			}
			if err := certs.CheckName(iname); err != nil {
				return fmt.Errorf("--name: %w", err)
			}
			if role == "member" && len(hosts) == 0 {
				return fmt.Errorf("--role member needs --host with the member's IP (or DNS name), the host of its --api-addr and --raft-addr: peers and lbctl verify the member by it, so without it no TLS connection to the member succeeds")
			}
			c, err := certs.LoadCA(caDir)
			if err != nil {
				return err
			}
			is, err := c.Issue(certs.Request{Role: role, Name: iname, Hosts: hosts, Validity: ivalidity})
			if err != nil {
				return fmt.Errorf("issue %s certificate %q: %w", role, iname, err)
			}
			if err := is.Save(iout, iname, force); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "edgelb://%s/%s written to %s.crt and %s.key\n", role, iname, filepath.Join(iout, iname), filepath.Join(iout, iname))
			return nil
		},
	}
	f := issue.Flags()
	f.StringVar(&caDir, "ca", ".", "directory holding ca.crt and ca.key")
	f.StringVar(&role, "role", "", "member, admin, operator, viewer or cloud-provider")
	f.StringVar(&iname, "name", "", "member id, user name, or (cloud-provider) tenant; DNS-style: lowercase letters, digits, '-', labels joined by '.'")
	f.StringSliceVar(&hosts, "host", nil, "IP or DNS name the certificate serves, repeatable (members: required, the API and raft addresses' host)")
	f.StringVar(&iout, "out", ".", "directory to write NAME.crt and NAME.key into")
	f.BoolVar(&force, "force", false, "replace existing files (certificate rotation)")
	f.DurationVar(&ivalidity, "validity", 365*24*time.Hour, "how long the certificate is valid")
	issue.MarkFlagRequired("role")
	issue.MarkFlagRequired("name")
	issue.RegisterFlagCompletionFunc("role", cobra.FixedCompletions(certs.Roles, cobra.ShellCompDirectiveNoFileComp))
	cmd.AddCommand(ca, issue)
	// A group without a Run of its own prints its help and succeeds, so
	// "lbd certs isue" looked done to a script; refuse an unknown word.
	cmd.SuggestionsMinimumDistance = 2
	cmd.Args = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
		if s := c.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, " or ") + "?"
		}
		return errors.New(msg)
	}
	cmd.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
	return cmd
}
