// Command lbd is the edgelb daemon: one member of the raft-replicated edge
// cluster, which programs the VIPs it owns into the kernel's IPVS.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/edgelb/edgelb/lbd/config"
	"github.com/edgelb/edgelb/lbd/daemon"
	"github.com/edgelb/edgelb/lbd/dataplane"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 && args[0] == dataplane.FenceCommand {
		return dataplane.RunFence(args[1:], os.Stdin)
	}
	cfg := config.Default()
	var cfgFile string
	var join []string
	cmd := &cobra.Command{
		Use:   "lbd",
		Short: "edgelb daemon: a member of the edge load-balancer cluster",
		Long: `lbd keeps the cluster's virtual services (VIPs, ports, backends) in a
raft-replicated store shared by 3–5 edge hosts, and programs the VIPs this host
owns into the kernel's IPVS, adds them to the data interface and announces them.

With no flags it starts a single-member cluster on loopback (API 127.0.0.1:7700,
raft 127.0.0.1:7701, metrics 127.0.0.1:7702) with its data in ./lbd-data. Bare
lbd uses the ipvs data plane on the default interface eth0: it needs root and a
kernel with IPVS, and it changes the host (VIP addresses on eth0, IPVS
services, SNAT rules for NAT-mode services). --data-plane=none is the
control-plane-only mode: no kernel changes and no root needed, but the VIPs it
owns do not answer, and it sends no health checks to backends (unless
--health-without-data-plane); use it for a first look, development and API
tests.

Flags override the config file; the config file overrides defaults.`,
		Example: `  # A single member for a first look (no kernel changes):
  lbd --data-plane=none

  # The first member of a production cluster (certificates: lbd certs --help):
  lbd --id edge1 --api-addr 10.0.0.11:7700 --raft-addr 10.0.0.11:7701 --interface eth0 \
      --tls-ca ca.crt --tls-cert edge1.crt --tls-key edge1.key

  # The others join it (a restarted member rejoins from its data dir by itself):
  lbd --id edge2 --api-addr 10.0.0.12:7700 --raft-addr 10.0.0.12:7701 --join 10.0.0.11:7700 \
      --tls-ca ca.crt --tls-cert edge2.crt --tls-key edge2.key

  # From a file (see configs/lbd.yaml):
  lbd --config /etc/edgelb/lbd.yaml`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgFile != "" {
				base := config.Default()
				if err := base.Load(cfgFile); err != nil {
					return err
				}
				// Flags the user set win over the file.
				f := cmd.Flags()
				override := cfg
				cfg = base
				if f.Changed("id") {
					cfg.ID = override.ID
				}
				if f.Changed("data-dir") {
					cfg.DataDir = override.DataDir
				}
				if f.Changed("api-addr") {
					cfg.APIAddr = override.APIAddr
				}
				if f.Changed("raft-addr") {
					cfg.RaftAddr = override.RaftAddr
				}
				if f.Changed("metrics-addr") {
					cfg.MetricsAddr = override.MetricsAddr
				}
				if f.Changed("data-plane") {
					cfg.DataPlane.Mode = override.DataPlane.Mode
				}
				if f.Changed("interface") {
					cfg.DataPlane.Interface = override.DataPlane.Interface
				}
				if f.Changed("snat") {
					cfg.DataPlane.SNAT = override.DataPlane.SNAT
				}
				if f.Changed("log-format") {
					cfg.Log.Format = override.Log.Format
				}
				if f.Changed("log-level") {
					cfg.Log.Level = override.Log.Level
				}
				if f.Changed("tls-ca") {
					cfg.TLS.CAFile = override.TLS.CAFile
				}
				if f.Changed("tls-cert") {
					cfg.TLS.CertFile = override.TLS.CertFile
				}
				if f.Changed("tls-key") {
					cfg.TLS.KeyFile = override.TLS.KeyFile
				}
				if f.Changed("health-without-data-plane") {
					cfg.Health.WithoutDataPlane = override.Health.WithoutDataPlane
				}
				if f.Changed("insecure-plaintext") {
					cfg.InsecurePlaintext = override.InsecurePlaintext
				}
			}
			if len(join) > 0 {
				cfg.Join = nil
				for _, j := range join {
					for _, p := range strings.Split(j, ",") {
						if p = strings.TrimSpace(p); p != "" {
							cfg.Join = append(cfg.Join, p)
						}
					}
				}
			}
			log := newLogger(cfg.Log)
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return daemon.Run(ctx, cfg, log)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfgFile, "config", "c", "", "YAML config file (flags override it)")
	f.StringVar(&cfg.ID, "id", cfg.ID, "member id, unique in the cluster (default: host name)")
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the raft log, snapshots and data-plane state")
	f.StringVar(&cfg.APIAddr, "api-addr", cfg.APIAddr, "gRPC API address, IP:port that lbctl and peers dial")
	f.StringVar(&cfg.RaftAddr, "raft-addr", cfg.RaftAddr, "raft address, IP:port that peers dial")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", cfg.MetricsAddr, "HTTP address for /metrics, /healthz and /readyz; empty disables")
	f.StringSliceVar(&join, "join", nil, "API addresses of existing members to join (comma-separated); omit to bootstrap a new cluster")
	f.StringVar(&cfg.DataPlane.Mode, "data-plane", cfg.DataPlane.Mode, "ipvs, or none for a control-plane-only member (no kernel changes)")
	f.BoolVar(&cfg.Health.WithoutDataPlane, "health-without-data-plane", cfg.Health.WithoutDataPlane, "with --data-plane=none, still send health checks to backends (off: a control-plane-only member probes nothing)")
	f.StringVar(&cfg.DataPlane.Interface, "interface", cfg.DataPlane.Interface, "data interface VIPs are added to")
	f.StringVar(&cfg.DataPlane.SNAT, "snat", cfg.DataPlane.SNAT, "rule engine for SNAT, takeover guard and source ranges: auto (nftables where the kernel has it, else iptables), nftables, iptables-legacy, iptables-nft, none (no SNAT)")
	f.StringVar(&cfg.TLS.CAFile, "tls-ca", "", "cluster CA certificate (PEM); with --tls-cert/--tls-key enables mutual TLS on the API and raft")
	f.StringVar(&cfg.TLS.CertFile, "tls-cert", "", "this member's certificate (edgelb://member/<id>; lbd certs issue makes it)")
	f.StringVar(&cfg.TLS.KeyFile, "tls-key", "", "this member's private key")
	f.BoolVar(&cfg.InsecurePlaintext, "insecure-plaintext", false, "allow plaintext on non-loopback addresses (lab only: no encryption, every caller is admin)")
	f.StringVar(&cfg.Log.Format, "log-format", cfg.Log.Format, "text or json")
	f.StringVar(&cfg.Log.Level, "log-level", cfg.Log.Level, "debug, info, warn or error")
	for flag, vals := range map[string][]string{
		"data-plane": {"ipvs", "none"}, "snat": {"auto", "nftables", "iptables-legacy", "iptables-nft", "none"},
		"log-format": {"text", "json"}, "log-level": {"debug", "info", "warn", "error"},
	} {
		cmd.RegisterFlagCompletionFunc(flag, cobra.FixedCompletions(vals, cobra.ShellCompDirectiveNoFileComp))
	}
	cmd.AddCommand(certsCommand(), recoverCommand())
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "lbd:", err)
		return 1
	}
	return 0
}

func newLogger(c config.Log) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
