package daemon

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/edgelb/edgelb/lbd/config"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// openKernel opens the IPVS data plane; tests replace it, so that they
// never touch the host's IPVS, addresses or sysctls.
var openKernel = openIPVS

func openDataPlane(ctx context.Context, cfg config.Config, log *slog.Logger) (DataPlane, string, error) {
	switch cfg.DataPlane.Mode {
	case "none":
		log.Warn("CONTROL-PLANE-ONLY MODE: this member programs nothing into the kernel; VIPs it owns will not answer. Use only for development and API tests.")
		return &noDataPlane{log: log}, "control-plane-only", nil
	default:
		dp, name, err := openKernel(ctx, cfg, log)
		if err != nil {
			// Never fall back to control-plane-only by ourselves: a member
			// that owns VIPs and programs none is an outage. Say how to
			// ask for it: only here, where the flag is known (the data
			// plane's errors say what is wrong with the kernel).
			return nil, "", fmt.Errorf("open the IPVS data plane on %s: %w (on a host meant to carry no traffic, start with --data-plane=none)", cfg.DataPlane.Interface, err)
		}
		return dp, name, nil
	}
}

// noDataPlane is the control-plane-only mode: it logs what it would own.
type noDataPlane struct {
	log  *slog.Logger
	last int
}

func (n *noDataPlane) Withdraw(context.Context) error {
	if n.last != 0 {
		n.log.Info("control-plane-only: would withdraw every VIP", "owned", n.last)
		n.last = 0
	}
	return nil
}

func (n *noDataPlane) Reconcile(ctx context.Context, all []*edgelbv1.VirtualService, owner string) error {
	owned := 0
	for _, vs := range all {
		if owner != "" && vs.Owner == owner {
			owned++
		}
	}
	if owned != n.last {
		n.log.Info("control-plane-only: not programming owned services", "count", owned)
		n.last = owned
	}
	return nil
}

func (n *noDataPlane) Close() error { return nil }
