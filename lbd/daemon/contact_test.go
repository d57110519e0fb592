package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgelb/edgelb/lbd/config"
	"github.com/edgelb/edgelb/lbd/lease"
)

// A restart keeps what the kernel holds for no more than what was left of the
// lease when last-contact was written, counted on the boot clock of the same
// boot: a wall-clock step cannot stretch it, a reboot (another boot id) or a
// boot time from the future carries nothing, nor does a record of a format
// without the boot fields.
func TestCarriedLeaseAfterRestart(t *testing.T) {
	cfg := config.Default()
	cfg.Ownership.Lease.Duration = time.Second
	type loaded struct {
		carried     time.Time
		lastContact time.Time
	}
	write := func(s string) loaded {
		t.Helper()
		cfg.DataDir = t.TempDir()
		if err := os.WriteFile(filepath.Join(cfg.DataDir, "last-contact"), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		d := &Daemon{cfg: cfg}
		left := d.loadContact()
		return loaded{carried: time.Now().Add(left), lastContact: d.lastContact}
	}
	boot, err := lease.BootNow()
	if err != nil {
		t.Fatal(err)
	}
	rec := func(wall time.Time, left time.Duration, id string, at time.Duration) string {
		return fmt.Sprintf("%d %d %s %d", wall.UnixNano(), int64(left), id, int64(at))
	}
	now := time.Now()

	d := write(rec(now, 500*time.Millisecond, boot.ID, boot.Time-200*time.Millisecond))
	if left := time.Until(d.carried); left <= 0 || left > 300*time.Millisecond {
		t.Errorf("carried %v, want at most 500ms − 200ms", left)
	}
	// More left than a lease (a record from a longer configured lease): capped.
	d = write(rec(now, time.Hour, boot.ID, boot.Time-100*time.Millisecond))
	if left := time.Until(d.carried); left > 900*time.Millisecond {
		t.Errorf("carried %v, want at most the lease − 100ms", left)
	}
	// The wall clock stepped back an hour since the record: the boot clock
	// still counts the 200ms that passed.
	d = write(rec(now.Add(time.Hour), 500*time.Millisecond, boot.ID, boot.Time-200*time.Millisecond))
	if left := time.Until(d.carried); left > 300*time.Millisecond {
		t.Errorf("a wall-clock step carried %v, want at most 300ms", left)
	}
	d = write(rec(now, time.Second, "00000000-0000-0000-0000-000000000000", boot.Time-time.Millisecond))
	if time.Now().Before(d.carried) {
		t.Error("a record of another boot carried a lease")
	}
	d = write(rec(now, time.Second, boot.ID, boot.Time+time.Hour))
	if time.Now().Before(d.carried) {
		t.Error("a record from the future of the boot clock carried a lease")
	}
	d = write(strconv.FormatInt(now.Add(-10*time.Millisecond).UnixNano(), 10) + " " + strconv.FormatInt(int64(time.Second), 10))
	if time.Now().Before(d.carried) {
		t.Error("a record without the boot fields carried a lease")
	}
	if d.lastContact.IsZero() {
		t.Error("the old format's time is not kept for diagnostics")
	}
}

// A long lease is on disk within a second of its start and kept within a
// second of what is left: recorded only every lease/4 (30 s of a 2-minute
// lease), an lbd restarted before the first record carried nothing and
// withdrew its VIPs under traffic.
func TestLongLeaseRecordedEverySecond(t *testing.T) {
	if got := contactEvery(2 * time.Minute); got != time.Second {
		t.Errorf("a 2-minute lease is recorded every %v, want every second", got)
	}
	if got := contactEvery(250 * time.Millisecond); got != 62500*time.Microsecond {
		t.Errorf("the default lease is recorded every %v, want a quarter of it", got)
	}
	cfg := config.Default()
	cfg.Ownership.Lease.Duration = 2 * time.Minute
	cfg.DataDir = t.TempDir()
	d := &Daemon{cfg: cfg}
	t0 := time.Now()
	boot, err := lease.BootNow()
	if err != nil {
		t.Fatal(err)
	}
	d.noteContact(t0, boot, 2*time.Minute)
	d.noteContact(t0.Add(1100*time.Millisecond), boot, 2*time.Minute-100*time.Millisecond)
	b, err := os.ReadFile(d.contactFile())
	if err != nil {
		t.Fatalf("no record after the first contact: %v", err)
	}
	want := fmt.Sprintf("%d %d ", t0.Add(1100*time.Millisecond).UnixNano(), int64(2*time.Minute-100*time.Millisecond))
	if !strings.HasPrefix(string(b), want) {
		t.Errorf("record %q: want the contact 1.1 s later (%q…)", b, want)
	}
}

// A lease ended early (a Revoke: a peer claimed this member's VIPs) is not
// carried by a restart: the record is rewritten to carry nothing, keeping
// the time of the last contact for the diagnostics.
func TestEndedLeaseIsNotCarried(t *testing.T) {
	cfg := config.Default()
	cfg.Ownership.Lease.Duration = time.Minute
	cfg.DataDir = t.TempDir()
	boot, err := lease.BootNow()
	if err != nil {
		t.Fatal(err)
	}
	then := time.Now().Add(-time.Second)
	rec := fmt.Sprintf("%d %d %s %d", then.UnixNano(), int64(time.Minute), boot.ID, int64(boot.Time-time.Second))
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "last-contact"), []byte(rec), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &Daemon{cfg: cfg, lease: lease.New(cfg.ID, cfg.Ownership.Lease.Duration, nil)}
	d.lease.Carry(d.loadContact())
	if !d.lease.Valid() {
		t.Fatal("nothing carried from a record of a second ago")
	}
	d.lease.Revoke()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.contactLoop(ctx); close(done) }()
	waitFor(t, 10*time.Second, "the record rewritten", func() bool {
		again := &Daemon{cfg: cfg}
		return again.loadContact() == 0
	})
	cancel()
	<-done
	again := &Daemon{cfg: cfg}
	again.loadContact()
	if got := again.lastContact.UnixNano(); got != then.UnixNano() {
		t.Errorf("last contact %s after the rewrite, want the recorded %s", again.lastContact, then)
	}
}
