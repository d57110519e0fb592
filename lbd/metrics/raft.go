package metrics

import (
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgelb/edgelb/raft/node"
)

// raftTimings maps hashicorp/raft's timing keys to histograms. It is the
// process-wide sink (hashicorp/raft reports through a global), so every
// Metrics registry shares its collectors.
//
// Why not hashicorp/go-metrics' own Prometheus sink (go-metrics/prometheus):
// it cannot keep the series that the Grafana dashboard
// (configs/grafana/edgelb.json), docs/OPERATIONS.md and the tests
// (lbd/daemon/ops_test.go, integration/e2e) read. It names each series
// after raft's key joined by "_" ("raft_commitTime", "raft_state_candidate")
// and cannot rename one (its definitions add only help and constant labels),
// whereas ours are edgelb_raft_commit_seconds and edgelb_raft_elections_total.
// It also turns timings into Summaries in milliseconds, with quantiles
// computed in each process over 10 s. The dashboard needs histograms in seconds
// (histogram_quantile over _bucket, summed across members), and quantiles
// from several members' summaries cannot be added together. The mapping
// below is the part that the sink cannot provide; the go-metrics plumbing
// (global, config, labels) stays go-metrics' own (raft/node.InstallRaftMetrics).
// raft_test.go pins these names and types.
type raftTimings struct {
	once       sync.Once
	samples    map[string]prometheus.Histogram
	counters   map[string]prometheus.Counter
	all        []prometheus.Collector
	installErr error
}

var raftSink = newRaftTimings()

func newRaftTimings() *raftTimings {
	t := &raftTimings{samples: map[string]prometheus.Histogram{}, counters: map[string]prometheus.Counter{}}
	hist := func(key, name, help string) {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: "raft", Name: name, Help: help, Buckets: latencyBuckets,
		})
		t.samples[key] = h
		t.all = append(t.all, h)
	}
	hist("raft.commitTime", "commit_seconds", "Leader: time from appending an entry to its commit by a quorum (hashicorp/raft raft.commitTime).")
	hist("raft.fsm.apply", "fsm_apply_seconds", "Time the state machine takes to apply the entries raft hands it at once: one batch (raft.fsm.applyBatch; lbd's FSM applies in batches), or one entry (raft.fsm.apply).")
	// The FSM is a raft.BatchingFSM: raft reports its applies under this key.
	t.samples["raft.fsm.applyBatch"] = t.samples["raft.fsm.apply"]
	hist("raft.fsm.enqueue", "fsm_enqueue_seconds", "Time a committed batch waits to be handed to the state machine (raft.fsm.enqueue).")
	hist("raft.leader.dispatchLog", "leader_dispatch_seconds", "Leader: time to write entries to its own log (raft.leader.dispatchLog).")
	hist("raft.replication.appendEntries.rpc", "append_entries_rpc_seconds", "Leader: round trip of one AppendEntries RPC to a follower.")
	hist("raft.snapshot.persist", "snapshot_persist_seconds", "Time to write a raft snapshot to disk.")
	hist("raft.leader.lastContact", "leader_last_contact_seconds", "Leader: time since it last heard from a quorum, sampled while leading.")
	ctr := func(key, name, help string) {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "raft", Name: name, Help: help})
		t.counters[key] = c
		t.all = append(t.all, c)
	}
	ctr("raft.state.candidate", "elections_total", "Elections this process's raft started (became candidate).")
	ctr("raft.transition.heartbeat_timeout", "heartbeat_timeouts_total", "Times a follower lost the leader's heartbeat and started an election.")
	ctr("raft.apply", "applies_total", "Leader: entries proposed through raft.Apply.")
	return t
}

func (t *raftTimings) Sample(key []string, ms float32) {
	if h, ok := t.samples[strings.Join(key, ".")]; ok {
		h.Observe(float64(ms) / 1000)
	}
}

func (t *raftTimings) Counter(key []string, n float32) {
	if c, ok := t.counters[strings.Join(key, ".")]; ok {
		c.Add(float64(n))
	}
}

func (t *raftTimings) Gauge([]string, float32) {}

func (t *raftTimings) collectors() []prometheus.Collector {
	t.once.Do(func() { t.installErr = node.InstallRaftMetrics(t) })
	return t.all
}

// raftCollector reads this member's raft status at scrape time.
type raftCollector struct {
	n                                                              *node.Node
	state, term, lastIndex, commitIndex, appliedIndex, lastContact *prometheus.Desc
	leader, peers, snapshotIndex, fsmPending                       *prometheus.Desc
}

var raftStates = []string{"Follower", "Candidate", "Leader", "Shutdown"}

func newRaftCollector(n *node.Node) *raftCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(ns, "raft", name), help, labels, nil)
	}
	return &raftCollector{
		n:             n,
		state:         d("state", "1 for this member's current raft state.", "state"),
		term:          d("term", "Current raft term."),
		lastIndex:     d("last_log_index", "Index of the last entry in this member's log."),
		commitIndex:   d("commit_index", "Highest log index known committed."),
		appliedIndex:  d("applied_index", "Highest log index applied to the state machine."),
		lastContact:   d("last_contact_seconds", "Follower: seconds since it last heard from the leader (0 on the leader; -1 never)."),
		leader:        d("leader", "1 when a leader is known, with its id.", "leader_id"),
		peers:         d("peers", "Other voters in the raft configuration, as this member sees it."),
		snapshotIndex: d("last_snapshot_index", "Log index of the last snapshot taken."),
		fsmPending:    d("fsm_pending", "Committed batches waiting to be applied to the state machine."),
	}
}

func (c *raftCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.state, c.term, c.lastIndex, c.commitIndex, c.appliedIndex, c.lastContact, c.leader, c.peers, c.snapshotIndex, c.fsmPending} {
		ch <- d
	}
}

func (c *raftCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.n.Status()
	g := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	for _, s := range raftStates {
		v := 0.0
		if s == st.State {
			v = 1
		}
		g(c.state, v, s)
	}
	g(c.term, float64(st.Term))
	g(c.lastIndex, float64(st.LastLogIndex))
	g(c.commitIndex, float64(st.CommitIndex))
	g(c.appliedIndex, float64(st.LastApplied))
	switch {
	case st.State == "Leader":
		g(c.lastContact, 0)
	case st.LastContact.IsZero():
		g(c.lastContact, -1)
	default:
		g(c.lastContact, sinceSeconds(st.LastContact))
	}
	if id, _ := c.n.Leader(); id != "" {
		g(c.leader, 1, id)
	} else {
		g(c.leader, 0, "")
	}
	stats := c.n.RaftStats()
	for key, d := range map[string]*prometheus.Desc{"num_peers": c.peers, "last_snapshot_index": c.snapshotIndex, "fsm_pending": c.fsmPending} {
		if v, err := strconv.ParseFloat(stats[key], 64); err == nil {
			g(d, v)
		}
	}
}
