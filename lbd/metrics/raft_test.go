package metrics

import (
	"bufio"
	"math"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	gometrics "github.com/hashicorp/go-metrics/compat"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// TestRaftTimingsReachTheSeriesOperatorsRead drives the bridge the way
// hashicorp/raft does, through go-metrics' process-wide global, and reads
// /metrics as Prometheus does. It checks the series that the dashboard and
// docs/OPERATIONS.md rely on: raft.commitTime in milliseconds becomes a
// histogram in seconds (histogram_quantile needs its buckets), and
// raft.state.candidate becomes the elections counter. Keys without a mapping
// produce no series. go-metrics' Prometheus sink would instead give a Summary
// named raft_commitTime, in milliseconds (see raft.go).
func TestRaftTimingsReachTheSeriesOperatorsRead(t *testing.T) {
	m := New("test") // installs the bridge as go-metrics' global sink
	scrape := func() map[string]float64 {
		t.Helper()
		rec := httptest.NewRecorder()
		promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		out := map[string]float64{}
		sc := bufio.NewScanner(rec.Body)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "# TYPE ") {
				f := strings.Fields(line)
				out["TYPE "+f[2]+" "+f[3]] = 1
				continue
			}
			if i := strings.LastIndexByte(line, ' '); i > 0 && !strings.HasPrefix(line, "#") {
				if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
					out[line[:i]] = v
				}
			}
		}
		return out
	}
	before := scrape()
	if before["TYPE edgelb_raft_commit_seconds histogram"] != 1 {
		t.Fatal("edgelb_raft_commit_seconds is not a histogram")
	}

	gometrics.AddSample([]string{"raft", "commitTime"}, 250) // ms, as raft reports
	gometrics.IncrCounter([]string{"raft", "state", "candidate"}, 2)
	gometrics.AddSample([]string{"raft", "unmapped", "timing"}, 1)

	after := scrape()
	if got := after["edgelb_raft_commit_seconds_count"] - before["edgelb_raft_commit_seconds_count"]; got != 1 {
		t.Errorf("commit timings recorded: %v, want 1", got)
	}
	if got := after["edgelb_raft_commit_seconds_sum"] - before["edgelb_raft_commit_seconds_sum"]; math.Abs(got-0.25) > 1e-6 {
		t.Errorf("commit time recorded as %v s, want 0.25 (250 ms)", got)
	}
	if got := after[`edgelb_raft_commit_seconds_bucket{le="+Inf"}`] - before[`edgelb_raft_commit_seconds_bucket{le="+Inf"}`]; got != 1 {
		t.Errorf("the +Inf bucket grew by %v, want 1", got)
	}
	if got := after["edgelb_raft_elections_total"] - before["edgelb_raft_elections_total"]; got != 2 {
		t.Errorf("edgelb_raft_elections_total grew by %v, want 2", got)
	}
	for series := range after {
		if strings.Contains(series, "unmapped") || strings.Contains(series, "commitTime") {
			t.Errorf("unexpected series %s", series)
		}
	}
}
