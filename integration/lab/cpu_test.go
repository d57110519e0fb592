package lab

import (
	"os"
	"strings"
	"testing"
	"time"
)

// readProcs finds this process and the CPU time it spends.
func TestReadProcsSeesThisProcess(t *testing.T) {
	before := readProcs()[os.Getpid()]
	if !strings.HasPrefix(before.name, "lab.test[") {
		t.Fatalf("this process read as %q, want lab.test[pid]", before.name)
	}
	for end := time.Now().Add(100 * time.Millisecond); time.Now().Before(end); {
	}
	if after := readProcs()[os.Getpid()]; after.cpu <= before.cpu {
		t.Errorf("CPU time %s after 100 ms of spinning, %s before", after.cpu, before.cpu)
	}
	if readIdle() <= 0 {
		t.Error("no idle time read from /proc/stat")
	}
}

// The summary lists only the seconds the CPU was (nearly) never idle.
func TestCPUSummaryListsBusySeconds(t *testing.T) {
	at := time.Date(2026, 12, 6, 15, 2, 50, 0, time.UTC)
	w := &cpuWatch{seconds: []cpuSecond{
		{at: at, idle: 0, top: []procCPU{{"lbd:edge1[507]", 320 * time.Millisecond}, {"ha.test[53]", 190 * time.Millisecond}}},
		{at: at.Add(time.Second), idle: 600 * time.Millisecond, top: []procCPU{{"lbd:edge2[236]", 100 * time.Millisecond}}},
	}}
	got := w.summary()
	want := "guest CPU, the busy seconds (busiest processes):\n  15:02:50 idle 0s: lbd:edge1[507] 320ms, ha.test[53] 190ms,"
	if got != want {
		t.Errorf("summary:\n%s\nwant:\n%s", got, want)
	}
}

func TestCPUWatchStops(t *testing.T) {
	w := startCPUWatch()
	done := make(chan struct{})
	go func() { w.close(); w.close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("close did not return")
	}
}
