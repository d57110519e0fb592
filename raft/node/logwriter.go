package node

import (
	"context"
	"log/slog"
	"strings"
)

// slogWriter carries hashicorp/raft's log lines into lbd's slog logger, so
// they share its format (text or JSON), level and destination.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		lvl := slog.LevelInfo
		for prefix, l := range map[string]slog.Level{"[TRACE]": slog.LevelDebug - 4, "[DEBUG]": slog.LevelDebug, "[INFO]": slog.LevelInfo, "[WARN]": slog.LevelWarn, "[ERROR]": slog.LevelError} {
			if strings.HasPrefix(line, prefix) {
				lvl, line = l, strings.TrimSpace(strings.TrimPrefix(line, prefix))
				break
			}
		}
		w.log.Log(context.Background(), lvl, line)
	}
	return len(p), nil
}
