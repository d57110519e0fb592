package lab

import (
	"strings"
	"testing"
	"time"
)

// MeasureCPU sees a process that burns CPU: this one.
func TestMeasureCPUSeesABusyProcess(t *testing.T) {
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	u := MeasureCPU(300 * time.Millisecond)
	close(stop)
	var most time.Duration
	for name, c := range u.Procs {
		most = max(most, c)
		if strings.Contains(name, "[") {
			t.Errorf("process name %q carries its pid: one name's processes are not added up", name)
		}
	}
	if most < 100*time.Millisecond {
		t.Errorf("busiest process used %s of a 300 ms span while this one spun: %v", most, u.Procs)
	}
	if u.Span < 300*time.Millisecond || u.Busy < most-2*clockTick {
		t.Errorf("span %s, busy %s: want at least the busiest process's %s", u.Span, u.Busy, most)
	}
}
