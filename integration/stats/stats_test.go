package stats

import (
	"testing"
	"time"
)

func TestPercentiles(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	p50, p99 := Percentiles(ds)
	if p50 != 50*time.Millisecond || p99 != 99*time.Millisecond {
		t.Errorf("p50 %s p99 %s, want 50ms 99ms", p50, p99)
	}
	p50, p99 = Percentiles(ds[:3]) // 100, 99, 98 ms
	if p50 != 99*time.Millisecond || p99 != 100*time.Millisecond {
		t.Errorf("3 samples: p50 %s p99 %s", p50, p99)
	}
	if p50, p99 := Percentiles(nil); p50 != 0 || p99 != 0 {
		t.Errorf("no samples: p50 %s p99 %s", p50, p99)
	}
	if ds[0] != 100*time.Millisecond {
		t.Error("Percentiles sorted its argument")
	}
}
