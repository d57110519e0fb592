package daemon

import (
	"context"
	"log/slog"
	"time"

	"github.com/edgelb/edgelb/lbd/config"
	"github.com/edgelb/edgelb/lbd/dataplane"
)

func openIPVS(ctx context.Context, cfg config.Config, log *slog.Logger) (DataPlane, string, error) {
	sync := ""
	if cfg.DataPlane.ConnSync {
		sync = cfg.DataPlane.Interface
	}
	e, err := dataplane.Open(ctx, dataplane.Config{
		SyncInterface: sync,
		FenceDelay:    cfg.Ownership.Lease.Duration,
		// The lease runs from the start: an lbd that hangs before its
		// reconcile loop first renews it is fenced too.
		LeaseUntil:         time.Now().Add(cfg.Ownership.Lease.Duration),
		SyncID:             cfg.DataPlane.SyncID,
		Interface:          cfg.DataPlane.Interface,
		StateDir:           cfg.DataDir,
		GARPBurst:          cfg.DataPlane.GARPBurst,
		GARPBurstInterval:  cfg.DataPlane.GARPBurstInterval.Duration,
		GARPRepeatInterval: cfg.DataPlane.GARPRepeatInterval.Duration,
		SNAT:               cfg.DataPlane.SNAT,
		TakeoverGuard:      cfg.DataPlane.TakeoverGuard.Duration,
		TickleACKs:         cfg.DataPlane.TickleACKs,
		Logger:             log.With("component", "dataplane"),
	})
	if err != nil {
		return nil, "", err
	}
	return e, "ipvs", nil
}
