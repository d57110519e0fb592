package daemon

import (
	"log/slog"
	"os"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
)

// watchdog speaks systemd's notify protocol (sd_notify): READY=1 once the
// reconcile loop runs, and WATCHDOG=1 from that loop only, so that systemd
// restarts an lbd whose loop is stuck (WatchdogSec= in configs/systemd/lbd.service).
// It is the second line behind the fence's lease: the fence takes the VIPs
// away from a hung lbd within the lease; the watchdog brings lbd back.
// Without NOTIFY_SOCKET (not started by systemd) it does nothing.
type watchdog struct {
	log      *slog.Logger
	interval time.Duration // WatchdogSec as systemd passed it; 0: no watchdog
	enabled  bool          // NOTIFY_SOCKET is set
	ready    bool
	last     time.Time
}

func newWatchdog(log *slog.Logger) *watchdog {
	w := &watchdog{log: log, enabled: os.Getenv("NOTIFY_SOCKET") != ""}
	iv, err := sddaemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("systemd watchdog settings unusable; not pinging it", "err", err)
	}
	w.interval = iv
	return w
}

// every is the longest the reconcile loop may sleep between pings: half the
// watchdog's interval, as sd_watchdog_enabled(3) advises.
func (w *watchdog) every() time.Duration {
	if w.interval <= 0 {
		return time.Hour
	}
	return w.interval / 2
}

// alive is called from the reconcile loop on every iteration.
func (w *watchdog) alive() {
	if !w.enabled {
		return
	}
	if !w.ready {
		// READY=1 once the loop that serves the VIPs runs, not once it
		// serves them: a member waiting for its cluster's quorum is
		// started, and systemd must not time its start out.
		w.ready = w.notify(sddaemon.SdNotifyReady)
	}
	if w.interval > 0 && time.Since(w.last) >= w.interval/4 {
		if w.notify(sddaemon.SdNotifyWatchdog) {
			w.last = time.Now()
		}
	}
}

// notifyStopping tells systemd a clean stop has begun (no-op outside systemd).
func notifyStopping() { sddaemon.SdNotify(false, sddaemon.SdNotifyStopping) }

func (w *watchdog) notify(state string) bool {
	ok, err := sddaemon.SdNotify(false, state)
	if err != nil {
		w.log.Warn("notify systemd", "state", state, "err", err)
	}
	return ok
}
