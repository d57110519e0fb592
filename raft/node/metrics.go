package node

import (
	"sync"

	gometrics "github.com/hashicorp/go-metrics/compat"
	"github.com/hashicorp/raft"
)

// RaftMetricsSink receives hashicorp/raft's own measurements, which it reports
// through a process-wide go-metrics sink: timings in milliseconds
// ("raft.commitTime", "raft.fsm.apply", "raft.snapshot.persist", ...) and
// counters ("raft.state.candidate", "raft.transition.heartbeat_timeout", ...).
// Keys are as raft emits them; labels are dropped. lbd/metrics maps them to
// edgelb_raft_* histograms and counters. go-metrics' Prometheus sink does not
// fit (its names and Summaries are not the series operators read; see
// lbd/metrics/raft.go).
type RaftMetricsSink interface {
	Sample(key []string, ms float32)
	Counter(key []string, n float32)
	Gauge(key []string, v float32)
}

var installOnce sync.Once

// InstallRaftMetrics makes s the process-wide sink of hashicorp/raft's
// measurements. Only the first call has an effect: there is one global sink
// per process (in tests with several members, it sees them all).
func InstallRaftMetrics(s RaftMetricsSink) error {
	var err error
	installOnce.Do(func() {
		cfg := gometrics.DefaultConfig("")
		cfg.EnableHostname = false
		cfg.EnableRuntimeMetrics = false // the Prometheus Go collector covers these
		cfg.EnableTypePrefix = false
		cfg.EnableServiceLabel = false
		_, err = gometrics.NewGlobal(cfg, sinkAdapter{s})
	})
	return err
}

type sinkAdapter struct{ s RaftMetricsSink }

func (a sinkAdapter) SetGauge(key []string, val float32) { a.s.Gauge(key, val) }
func (a sinkAdapter) SetGaugeWithLabels(key []string, val float32, _ []gometrics.Label) {
	a.s.Gauge(key, val)
}
func (a sinkAdapter) EmitKey([]string, float32)             {}
func (a sinkAdapter) IncrCounter(key []string, val float32) { a.s.Counter(key, val) }
func (a sinkAdapter) IncrCounterWithLabels(key []string, val float32, _ []gometrics.Label) {
	a.s.Counter(key, val)
}
func (a sinkAdapter) AddSample(key []string, val float32) { a.s.Sample(key, val) }
func (a sinkAdapter) AddSampleWithLabels(key []string, val float32, _ []gometrics.Label) {
	a.s.Sample(key, val)
}

// OnLeaderChange calls fn with the new leader's id ("" when there is none)
// every time this member sees the leader change, until the node shuts down.
// fn runs on its own goroutine and must not block for long.
func (n *Node) OnLeaderChange(fn func(leaderID string)) {
	ch := make(chan raft.Observation, 16)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	n.raft.RegisterObserver(obs)
	go func() {
		defer n.raft.DeregisterObserver(obs)
		for {
			select {
			case <-n.done:
				return
			case o := <-ch:
				if lo, ok := o.Data.(raft.LeaderObservation); ok {
					fn(string(lo.LeaderID))
				}
			}
		}
	}()
}

// RaftStats returns hashicorp/raft's own status map (num_peers,
// last_snapshot_index, fsm_pending, ...), for metrics and debugging.
func (n *Node) RaftStats() map[string]string { return n.raft.Stats() }
