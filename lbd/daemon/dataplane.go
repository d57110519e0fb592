package daemon

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/edgelb/edgelb/lbd/config"
	"github.com/edgelb/edgelb/lbd/dataplane"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// openKernel opens the IPVS data plane; tests replace it, so that they
// never touch the host's IPVS, addresses or sysctls.
var openKernel = openIPVS

// openDataPlane opens the configured data plane. kernel is its side that
// reads the kernel (counters, isolated services, metrics hooks): nil in
// control-plane-only mode and for test fakes that program no kernel.
func openDataPlane(ctx context.Context, cfg config.Config, log *slog.Logger) (dp DataPlane, kernel dataplane.Kernel, name string, err error) {
	switch cfg.DataPlane.Mode {
	case "none":
		log.Warn("CONTROL-PLANE-ONLY MODE: this member programs nothing into the kernel; VIPs it owns will not answer. Use only for development and API tests.")
		return &noDataPlane{log: log}, nil, "control-plane-only", nil
	default:
		dp, name, err := openKernel(ctx, cfg, log)
		if err != nil {
			// Never fall back to control-plane-only by ourselves: a member
			// that owns VIPs and programs none is an outage. Say how to
			// ask for it: only here, where the flag is known (the data
			// plane's errors say what is wrong with the kernel).
			return nil, nil, "", fmt.Errorf("open the IPVS data plane on %s: %w (on a host meant to carry no traffic, start with --data-plane=none)", cfg.DataPlane.Interface, err)
		}
		kernel, _ = dp.(dataplane.Kernel)
		return dp, kernel, name, nil
	}
}

// noDataPlane is the control-plane-only mode: it logs what it would own.
type noDataPlane struct {
	log  *slog.Logger
	last int
	// owned is what it would own, kept from the changes.
	owned map[dataplane.ServiceKey]bool
}

// ReconcileChanged is Reconcile for the changed services only.
func (n *noDataPlane) ReconcileChanged(_ context.Context, changed map[dataplane.ServiceKey]*edgelbv1.VirtualService, owner string) error {
	if n.owned == nil {
		n.owned = map[dataplane.ServiceKey]bool{}
	}
	for k, vs := range changed {
		if vs != nil && owner != "" && vs.Owner == owner {
			n.owned[k] = true
		} else {
			delete(n.owned, k)
		}
	}
	n.note(len(n.owned))
	return nil
}

func (n *noDataPlane) note(owned int) {
	if owned != n.last {
		n.log.Info("control-plane-only: not programming owned services", "count", owned)
		n.last = owned
	}
}

func (n *noDataPlane) Withdraw(context.Context) error {
	if n.last != 0 {
		n.log.Info("control-plane-only: would withdraw every VIP", "owned", n.last)
		n.last = 0
	}
	return nil
}

func (n *noDataPlane) Reconcile(ctx context.Context, all []*edgelbv1.VirtualService, owner string) error {
	n.owned = map[dataplane.ServiceKey]bool{}
	for _, vs := range all {
		if owner != "" && vs.Owner == owner {
			n.owned[dataplane.KeyOf(vs)] = true
		}
	}
	n.note(len(n.owned))
	return nil
}

func (n *noDataPlane) Close() error { return nil }
