package node

import (
	"errors"
	"io"
	"log/slog"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// flakyStable fails writes while full is set.
type flakyStable struct {
	raft.StableStore
	mu   sync.Mutex
	full bool
}

func (f *flakyStable) setFull(v bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.full = v
}

func (f *flakyStable) SetUint64(k []byte, v uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.full {
		return syscall.ENOSPC
	}
	return f.StableStore.SetUint64(k, v)
}

// TestStableStoreWaitsForSpace: a term that cannot be written holds the
// caller (raft would panic on the error), the failure is reported meanwhile,
// and the write completes once space is back.
func TestStableStoreWaitsForSpace(t *testing.T) {
	inner := &flakyStable{StableStore: raft.NewInmemStore(), full: true}
	d := &disk{dir: "/data"}
	s := &stableStore{StableStore: inner, disk: d, log: slog.New(slog.NewTextHandler(io.Discard, nil)), done: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- s.SetUint64([]byte("CurrentTerm"), 7) }()
	for d.err() == nil {
		select {
		case err := <-done:
			t.Fatalf("SetUint64 returned %v on a full disk; it must wait", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if !errors.Is(d.err(), syscall.ENOSPC) {
		t.Fatalf("reported failure %v, want ENOSPC", d.err())
	}
	inner.setFull(false)
	if err := <-done; err != nil {
		t.Fatalf("SetUint64 once space is back: %v", err)
	}
	if v, err := inner.GetUint64([]byte("CurrentTerm")); err != nil || v != 7 {
		t.Fatalf("stored term %d, %v; want 7", v, err)
	}
	if d.err() != nil {
		t.Fatalf("failure still reported after a write succeeded: %v", d.err())
	}
}

func TestLogStoreRecordsFailures(t *testing.T) {
	d := &disk{dir: "/data"}
	l := &logStore{LogStore: failingLogs{raft.NewInmemStore()}, disk: d}
	if err := l.StoreLogs([]*raft.Log{{Index: 1}}); err == nil || d.err() == nil {
		t.Fatalf("failed StoreLogs: err %v, recorded %v", err, d.err())
	}
	if err := l.StoreLog(&raft.Log{Index: 2}); err != nil || d.err() != nil {
		t.Fatalf("StoreLog that succeeds: err %v, still recorded %v", err, d.err())
	}
}

// failingLogs fails StoreLogs and passes StoreLog.
type failingLogs struct{ *raft.InmemStore }

func (failingLogs) StoreLogs([]*raft.Log) error { return syscall.EROFS }
