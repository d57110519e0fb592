package daemon

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/edgelb/edgelb/lbd/config"
)

func openIPVS(ctx context.Context, cfg config.Config, log *slog.Logger) (DataPlane, string, error) {
	return nil, "", fmt.Errorf("the ipvs data plane is not available in this build; run with --data-plane=none for a control-plane-only member")
}
