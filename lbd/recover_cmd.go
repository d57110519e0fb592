package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/edgelb/edgelb/lbd/config"
	"github.com/edgelb/edgelb/raft/fsm"
	"github.com/edgelb/edgelb/raft/node"
)

func recoverCommand() *cobra.Command {
	var cfgFile string
	var yes bool
	flags := config.Default()
	cmd := &cobra.Command{
		Use:   "recover --yes",
		Short: "Make a stopped member the only member of a new cluster, from its own raft log and snapshots",
		Long: `recover is for a cluster that has lost its majority for good (docs/OPERATIONS.md §8).
Run it on the surviving member while its lbd is stopped. It rewrites the raft
data in <data-dir>/raft so that, started again, the member forms a cluster of
itself alone with everything its raft data holds: the newest snapshot and every
log entry after it (hashicorp/raft RecoverCluster), not just the last snapshot.
The other members then join it with an empty data dir and replicate.

Entries the lost members committed that this member never received are gone;
entries it received that were never committed become committed. Never run it
while other members of the cluster can come back: they would form a second
cluster next to this one. A running lbd holds the raft store locked: recover
refuses then.

It reads the same config file and flags as lbd for the member's id, data dir
and raft address.`,
		Example: `  systemctl stop lbd
  cp -a /var/lib/edgelb/raft /var/lib/edgelb/raft.before-recover
  lbd recover --config /etc/edgelb/lbd.yaml --yes
  systemctl start lbd`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := config.Default()
			if cfgFile != "" {
				if err := cfg.Load(cfgFile); err != nil {
					return err
				}
			}
			f := cmd.Flags()
			if f.Changed("id") {
				cfg.ID = flags.ID
			}
			if f.Changed("data-dir") {
				cfg.DataDir = flags.DataDir
			}
			if f.Changed("raft-addr") {
				cfg.RaftAddr = flags.RaftAddr
			}
			dir := filepath.Join(cfg.DataDir, "raft")
			if !yes {
				return fmt.Errorf("recover makes member %s (raft %s) the only member of a new cluster from %s; the other members must be gone for good. Run again with --yes", cfg.ID, cfg.RaftAddr, dir)
			}
			return runRecover(cmd.OutOrStdout(), cmd.ErrOrStderr(), cfg, dir)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfgFile, "config", "c", "", "lbd's YAML config file (flags override it)")
	f.StringVar(&flags.ID, "id", flags.ID, "member id (as lbd runs with)")
	f.StringVar(&flags.DataDir, "data-dir", flags.DataDir, "lbd's data directory; the raft data is in its raft/ subdirectory")
	f.StringVar(&flags.RaftAddr, "raft-addr", flags.RaftAddr, "raft address the member listens on")
	f.BoolVar(&yes, "yes", false, "really rewrite the member's raft configuration")
	return cmd
}

func runRecover(stdout, stderr io.Writer, cfg config.Config, dir string) error {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	rec, err := node.Recover(node.Config{
		ID: cfg.ID, RaftAddr: cfg.RaftAddr, DataDir: dir, Logger: log,
		Timing: node.Timing{
			HeartbeatTimeout: cfg.Raft.HeartbeatTimeout.Duration, ElectionTimeout: cfg.Raft.ElectionTimeout.Duration,
			LeaderLeaseTimeout: cfg.Raft.LeaderLeaseTimeout.Duration, CommitTimeout: node.CommitTimeoutFor(cfg.Raft.HeartbeatTimeout.Duration),
		},
	}, fsm.New(log))
	if errors.Is(err, node.ErrDataDirInUse) {
		return fmt.Errorf("%w: stop lbd first (systemctl stop lbd), then run recover again", err)
	}
	if err != nil {
		return err
	}
	var prev []string
	for _, s := range rec.Previous {
		prev = append(prev, s.ID)
	}
	fmt.Fprintf(stdout, "recovered member %s from %s: snapshot at index %d and the log up to index %d\n", cfg.ID, dir, rec.SnapshotIndex, rec.LastIndex)
	fmt.Fprintf(stdout, "state at revision %d: %d virtual services, %d address pools\n", rec.Revision, rec.VirtualServices, rec.AddressPools)
	fmt.Fprintf(stdout, "raft configuration: was [%s], now [%s] alone\n", strings.Join(prev, " "), cfg.ID)
	fmt.Fprintln(stdout, "next: start lbd on this member, remove the lost members (lbctl member remove ID), then start the others with an empty data dir and --join")
	return nil
}
