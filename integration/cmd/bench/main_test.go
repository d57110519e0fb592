package main

import (
	"reflect"
	"testing"
)

func TestBenchJSONRounds(t *testing.T) {
	out := `BENCH-JSON {"name":"failover-sigkill","p50":1049.0,"p99":1158.0,"n":3,"profile":"guest"}
    guest_test.go:1: BENCH-JSON {"name":"failover-sigkill","p50":1049.0,"p99":1158.0,"n":3,"profile":"guest"}
BENCH-JSON {"name":"kept-sigkill","value":100.00,"n":30}`
	got := benchJSON(out)
	want := map[string][]float64{
		"failover-sigkill p50": {1049}, "failover-sigkill p99": {1158}, "failover-sigkill rounds": {3},
		"kept-sigkill": {100}, "kept-sigkill rounds": {30},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("benchJSON = %v, want %v (the guest's echo of a line counts once)", got, want)
	}
}

func TestLinearizabilityRuns(t *testing.T) {
	// Ten runs with no violation print ten lines that differ only in run:
	// each must count, or the row would claim one run.
	out := `BENCH-JSON {"name":"linearizability-violations","run":1,"value":0}
BENCH-JSON {"name":"linearizability-violations","run":2,"value":0}
BENCH-JSON {"name":"linearizability-ops","run":1,"value":1131}`
	got := benchJSON(out)
	if !reflect.DeepEqual(got["linearizability-violations"], []float64{0, 0}) || !reflect.DeepEqual(got["linearizability-ops"], []float64{1131}) {
		t.Fatalf("benchJSON = %v; want one value per run", got)
	}
}

func TestConnsPerRound(t *testing.T) {
	out := `BENCH tcp new connections/s from the client (concurrency 4, 1500 per round, round 1 of 2): via VIP 150/s, straight to a node 170/s, ratio 0.88
BENCH tcp new connections/s from the client (concurrency 4, 1500 per round, round 2 of 2): via VIP 160/s, straight to a node 180/s, ratio 0.89
tcp, both rounds: via VIP 155/s, straight to a node 175/s, ratio 0.89`
	got := connsBench(out)
	if !reflect.DeepEqual(got["tcp via-vip"], []float64{150, 160}) || !reflect.DeepEqual(got["tcp direct"], []float64{170, 180}) {
		t.Fatalf("connsBench = %v; want each round once, and not the summary", got)
	}
}

func TestStatsMedian(t *testing.T) {
	if m, lo, hi := stats([]float64{3, 1, 2}); m != 2 || lo != 1 || hi != 3 {
		t.Errorf("stats(3,1,2) = %v %v %v", m, lo, hi)
	}
	if m, _, _ := stats([]float64{150, 160}); m != 155 {
		t.Errorf("median of two = %v, want their mean", m)
	}
}
