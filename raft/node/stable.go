package node

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// stableStore keeps hashicorp/raft from panicking when its term or vote cannot
// be written (a full or read-only data directory): raft panics on a failed
// write of its current term, which took lbd down with a stack trace. A raft
// member must not go on without persisting them, so a failed write is
// retried, holding raft where it is (it answers no peer, so the others carry
// on without it), until it succeeds — space is back — or the member shuts down.
// The failure is reported by StorageError, so that writes are refused with
// the reason instead of waiting for a leader.
type stableStore struct {
	raft.StableStore
	*disk
	log  *slog.Logger
	done <-chan struct{}
}

// disk is what the member knows of its data directory: the last failed write
// of raft's state or log, nil once a write has succeeded again.
type disk struct {
	dir    string
	mu     sync.Mutex
	failed error
}

// set records the outcome of a write; it returns the failure before it.
func (d *disk) set(err error) (was error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	was, d.failed = d.failed, err
	return was
}

// err is the storage failure that keeps this member from taking writes, or nil.
func (d *disk) err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.failed
}

// logStore records the outcome of raft's log writes in disk. A failed write
// is raft's to handle (a leader steps down, a follower refuses the entries);
// the record lets the API refuse writes with the reason while it lasts: until
// the next log write succeeds (a new leader's first entry, the leader's
// retries to a follower).
type logStore struct {
	raft.LogStore
	*disk
}

func (l *logStore) StoreLog(e *raft.Log) error {
	return l.record(l.LogStore.StoreLog(e))
}

func (l *logStore) StoreLogs(es []*raft.Log) error {
	return l.record(l.LogStore.StoreLogs(es))
}

func (l *logStore) record(err error) error {
	if err != nil {
		l.set(fmt.Errorf("cannot write the raft log in %s: %w", l.dir, err))
	} else if l.err() != nil {
		l.set(nil)
	}
	return err
}

// retryEvery is how often a failed term or vote write is tried again.
const retryEvery = time.Second

func (s *stableStore) Set(key, val []byte) error {
	return s.retry(key, func() error { return s.StableStore.Set(key, val) })
}

func (s *stableStore) SetUint64(key []byte, val uint64) error {
	return s.retry(key, func() error { return s.StableStore.SetUint64(key, val) })
}

func (s *stableStore) retry(key []byte, write func() error) error {
	var logged time.Time
	for {
		err := write()
		if err == nil {
			if s.set(nil) != nil {
				s.log.Info("raft state can be written again", "data_dir", s.dir)
			}
			return nil
		}
		s.set(fmt.Errorf("cannot write raft state (%s) in %s: %w", key, s.dir, err))
		if time.Since(logged) > 10*time.Second {
			logged = time.Now()
			s.log.Error("cannot write raft state; this member stays out of the cluster until it can (free space or make the data directory writable)",
				"data_dir", s.dir, "key", string(key), "err", err)
		}
		select {
		case <-s.done:
			// Shutting down: raft waits for this goroutine, and would panic
			// on an error; Node.Shutdown does not wait for it.
			<-make(chan struct{})
		case <-time.After(retryEvery):
		}
	}
}
