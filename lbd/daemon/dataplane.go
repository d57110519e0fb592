package daemon

import (
	"context"
	"log/slog"

	"github.com/edgelb/edgelb/lbd/config"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

func openDataPlane(ctx context.Context, cfg config.Config, log *slog.Logger) (DataPlane, string, error) {
	switch cfg.DataPlane.Mode {
	case "none":
		log.Warn("CONTROL-PLANE-ONLY MODE: this member programs nothing into the kernel; VIPs it owns will not answer. Use only for development and API tests.")
		return &noDataPlane{log: log}, "control-plane-only", nil
	default:
		return openIPVS(ctx, cfg, log)
	}
}

// noDataPlane is the control-plane-only mode: it logs what it would own.
type noDataPlane struct {
	log  *slog.Logger
	last int
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
