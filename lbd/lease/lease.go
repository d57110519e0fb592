// Package lease is a member's quorum lease on its VIPs: a member may serve
// (hold VIP addresses) while a majority of the voters, itself included, has
// answered one of its liveness probes within the lease's length, counted
// from when the probe was SENT. The raft leader plays no part: a leader
// election changes nothing for an owner that still reaches a majority.
//
// All instants are monotonic (a Clock counts from an arbitrary origin and
// never jumps), so stepping the wall clock neither extends nor cuts a lease.
// The one wall-clock input, a renewal recorded on disk before a restart, goes
// through CarriedBoot, on CLOCK_BOOTTIME and the boot id, which a wall-clock
// step or a reboot cannot stretch.
package lease

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Clock reads a monotonic clock: the time since an arbitrary fixed origin.
type Clock interface {
	Now() time.Duration
}

type systemClock struct{ origin time.Time }

// Now is read from the monotonic reading time.Now carries (time.Since uses
// it), never from the wall clock.
func (c systemClock) Now() time.Duration { return time.Since(c.origin) }

// System is the process's monotonic clock.
var System Clock = systemClock{origin: time.Now()}

// Lease tracks the probe answers that renew this member's lease.
type Lease struct {
	self   string
	length time.Duration
	clock  Clock

	mu     sync.Mutex
	voters []string
	index  uint64 // the raft log index of the configuration voters is from
	// reports: per peer, the configuration its latest view carried when
	// newer than this member's own (a promotion this member has not applied
	// yet, or its own removal): the lease must hold under the newest of
	// them too, or a member that has not seen a promotion could count a
	// majority the leader's assigner does not. Per peer and only while
	// fresh (within a lease), so that a configuration a peer no longer
	// reports (truncated, never committed) or one from a peer gone silent
	// stops counting.
	reports map[string]report
	// sent is, per member, the send time of the latest probe it answered.
	sent map[string]time.Duration
	// carried is when a lease renewed before a restart runs out (see
	// Carry); zero when nothing was carried or it was revoked.
	carried time.Duration
	// answers gets a token each time an answer to a newer probe arrives
	// (see Answers); one buffered token stands for any number.
	answers chan struct{}
}

// New returns the lease of member self with the given length; it is not
// valid until SetVoters names the voters and enough of them answer.
func New(self string, length time.Duration, clock Clock) *Lease {
	if clock == nil {
		clock = System
	}
	return &Lease{self: self, length: length, clock: clock, sent: map[string]time.Duration{}, reports: map[string]report{},
		answers: make(chan struct{}, 1)}
}

// report is a configuration a peer reported, and when.
type report struct {
	index  uint64
	voters []string
	at     time.Duration
}

// Length is the lease's length.
func (l *Lease) Length() time.Duration { return l.length }

// Clock is the clock the lease reads.
func (l *Lease) Clock() Clock { return l.clock }

// SetVoters sets the raft configuration's voters. Answers from anyone else
// (non-voters, removed members) are kept but never count.
func (l *Lease) SetVoters(ids []string) { l.SetConfig(0, ids) }

// SetConfig sets the raft configuration's voters and the log index of that
// configuration. A newer configuration reported by a peer (Reported) stops
// counting once this member's own has reached its index.
func (l *Lease) SetConfig(index uint64, ids []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.voters = slices.Clone(ids)
	slices.Sort(l.voters)
	l.index = index
	maps.DeleteFunc(l.reports, func(_ string, r report) bool { return r.index <= index })
}

// Reported records the configuration (its log index and voters) that peer
// from's latest view carried; the caller passes only members of this
// member's own configuration. When it is newer than this member's own, the
// lease is valid only while a majority holds under both: the leader's
// assigner counts a majority of the newer one, and this member must not
// count a smaller one meanwhile.
func (l *Lease) Reported(from string, index uint64, ids []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if index <= l.index || len(ids) == 0 {
		delete(l.reports, from)
		return
	}
	voters := slices.Clone(ids)
	slices.Sort(voters)
	l.reports[from] = report{index: index, voters: voters, at: l.clock.Now()}
}

// newest is the newest fresh configuration a peer reported that is newer
// than this member's own, and who reported it (of equals, the first by
// name); "" when there is none (l.mu held).
func (l *Lease) newest(now time.Duration) (string, report) {
	var by string
	var best report
	for from, r := range l.reports {
		if now-r.at > l.length || r.index <= l.index || r.index < best.index || r.index == best.index && by != "" && from > by {
			continue
		}
		by, best = from, r
	}
	return by, best
}

// Removal is a member's word that this member was removed from the cluster.
type Removal struct {
	// By is the member, Index the raft log index of its configuration, and
	// Voters that configuration's voters, this member not among them.
	By     string
	Index  uint64
	Voters []string
}

// Removed reports whether the newest configuration a member reported (see
// Reported) leaves this member out while its own configuration lists it as
// a voter: it was removed and never learnt it. hashicorp/raft sends a
// removed member the entry that removes it once, best effort, and never
// when it is down then; the others refuse its votes, so it would wait for a
// leader for ever. (edgelb never demotes a voter, so a voter missing from a
// newer configuration was removed.) Its lease is then not valid.
func (l *Lease) Removed() (Removal, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	by, r := l.newest(l.clock.Now())
	if !l.removed(by, r) {
		return Removal{}, false
	}
	return Removal{By: by, Index: r.index, Voters: slices.Clone(r.voters)}, true
}

// removed reports whether r, the newest report (by its reporter, "" for
// none), leaves this member out while its own configuration lists it as a
// voter (l.mu held).
func (l *Lease) removed(by string, r report) bool {
	return by != "" && slices.Contains(l.voters, l.self) && !slices.Contains(r.voters, l.self)
}

// Revoke ends the lease now: every answer counted so far is forgotten, and
// what a restart carried. A member revokes its lease when it learns that a
// peer has claimed its VIPs provisionally (lbd/liveness): its successor
// serves them, so it must not, whatever answers it had before.
func (l *Lease) Revoke() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.sent)
	l.carried = 0
}

// Carry keeps the lease valid for left from now without answers: what was
// left, at the restart, of a lease this member held before it (recorded on
// disk, see CarriedBoot). It is as sound as the answers it came from: the
// others count this member's silence from when they last heard it, and move
// its VIPs only after the grace, which outlasts a lease. Without it a member
// restarted quicker than that would withdraw its VIPs between catching up
// and its first answers (seen in the guest: caught up 0.4 s after the start,
// before a majority had answered, it withdrew a VIP under traffic). A
// removal or a Revoke ends it like any lease.
func (l *Lease) Carry(left time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.carried = 0
	if left > 0 {
		l.carried = l.clock.Now() + left
	}
}

// CarriedLeft is how much is left of the lease Carry gave (zero or less when
// none): what a member not yet caught up may keep serving on, before any
// answer counts.
func (l *Lease) CarriedLeft() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.carried == 0 {
		return -1
	}
	return l.carried - l.clock.Now()
}

// Answered records that member from answered a probe sent at sent (on this
// lease's clock). An answer can renew the lease only to sent + length: a late
// answer to an old probe, or answers arriving out of order, extend nothing
// beyond what their probe justified.
func (l *Lease) Answered(from string, sent time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sent > l.clock.Now() {
		return // not a probe of ours: no send time lies in the future
	}
	if sent > l.sent[from] {
		l.sent[from] = sent
		select {
		case l.answers <- struct{}{}:
		default: // a token is already waiting
		}
	}
}

// Answers receives after an answer to a newer probe than that member had
// answered before: the lease may have been extended. Tokens coalesce, so
// one receive may stand for many answers, and a receive may find nothing
// new (Until tells). It is for one reader, the loop that passes the lease
// on to the fence: it hears of an extension when it arrives, not at its
// next look, which on a sub-second lease is a large part of the margin.
func (l *Lease) Answers() <-chan struct{} { return l.answers }

// expiry is when the lease runs out (on the clock), and whether it was ever
// renewed under the current voters.
func (l *Lease) expiry(now time.Duration) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	by, newer := l.newest(now)
	if l.removed(by, newer) {
		return 0, false // the others' answers hold nothing for a removed member
	}
	var exp time.Duration
	ok := false
	if len(l.voters) > 0 { // else no configuration known yet: nothing to be a majority of
		exp, ok = l.expiryUnder(l.voters, now)
	}
	if l.carried > now && (!ok || l.carried > exp) {
		exp, ok = l.carried, true
	}
	// What was carried stands in for answers under this member's own
	// configuration only: under a newer one a peer reports (a promotion),
	// the new voters count this member's silence from when they joined,
	// so only their answers hold.
	if ok && by != "" {
		e2, ok2 := l.expiryUnder(newer.voters, now)
		exp, ok = min(exp, e2), ok2
	}
	return exp, ok
}

// InContact reports whether a majority of the voters answered within the
// lease: the lease without what a restart carried (and none for a removed
// member). A member that is not could not get a change committed (a clean
// stop's hand-off) however long it may still serve.
func (l *Lease) InContact() bool {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.voters) == 0 || l.removed(l.newest(now)) {
		return false
	}
	exp, ok := l.expiryUnder(l.voters, now)
	return ok && exp > now
}

// expiryUnder is the lease's end counted against the given voters.
func (l *Lease) expiryUnder(voters []string, now time.Duration) (time.Duration, bool) {
	need := len(voters)/2 + 1
	var others []time.Duration
	for _, id := range voters {
		if id == l.self {
			need-- // this member counts for itself
			continue
		}
		if t, ok := l.sent[id]; ok {
			others = append(others, t)
		}
	}
	if need == 0 {
		// A single-voter cluster: this member is the majority.
		return now + l.length, true
	}
	if len(others) < need {
		return 0, false
	}
	// The need-th most recent answered probe: the latest moment at which a
	// majority had answered.
	slices.Sort(others)
	slices.Reverse(others)
	return others[need-1] + l.length, true
}

// Remaining is how long the lease stays valid without another answer; zero
// or less when it is not valid.
func (l *Lease) Remaining() time.Duration {
	now := l.clock.Now()
	exp, ok := l.expiry(now)
	if !ok {
		return -1
	}
	return exp - now
}

// Valid reports whether the lease is valid now.
func (l *Lease) Valid() bool { return l.Remaining() > 0 }

// Until is when the lease runs out as a time.Time for timers and the fence.
// It is taken from time.Now, whose monotonic reading every comparison and
// time.Until of it uses; a wall-clock step does not move it.
func (l *Lease) Until() time.Time {
	r := l.Remaining()
	if r < 0 {
		r = 0
	}
	return time.Now().Add(r)
}

// Carried is how much of a lease renewed at the wall-clock time recorded
// (before a restart) is left at now: length minus the time since, or 0. A
// record from the future (the wall clock stepped back since) carries nothing:
// it cannot be told apart from a wrong one, and trusting it would extend the
// lease by the size of the step.
func Carried(recorded, now time.Time, length time.Duration) time.Duration {
	if recorded.IsZero() || recorded.After(now) {
		return 0
	}
	return max(length-now.Sub(recorded), 0)
}

// Boot is an instant on CLOCK_BOOTTIME together with the boot it belongs
// to: the one clock that neither a wall-clock step nor a suspend moves
// backwards, and a boot id that tells a reboot (which restarts it from zero).
type Boot struct {
	ID   string
	Time time.Duration
}

// BootNow reads the kernel's boot id and CLOCK_BOOTTIME.
func BootNow() (Boot, error) {
	id, err := bootID()
	if err != nil {
		return Boot{}, err
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return Boot{}, fmt.Errorf("read CLOCK_BOOTTIME: %w", err)
	}
	return Boot{ID: id, Time: time.Duration(ts.Nano())}, nil
}

// bootID is read until a read succeeds, then kept: no process outlives its
// boot, and the daemon asks several times a second. A failed read (out of
// file descriptors, say) is not kept, or no contact would be recorded again.
func bootID() (string, error) {
	if id := bootIDRead.Load(); id != nil {
		return *id, nil
	}
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("read the boot id: %w", err)
	}
	id := strings.TrimSpace(string(b))
	bootIDRead.Store(&id)
	return id, nil
}

var bootIDRead atomic.Pointer[string]

// CarriedBoot is how much of a lease that had left to run at recorded
// (before a restart) is left at now: left minus the boot time since, or 0.
// A record of another boot carries nothing (the host rebooted: whatever the
// kernel held is gone, and the two clocks cannot be compared), nor does one
// from the future of this boot's clock (it is not ours), nor does left
// beyond length.
func CarriedBoot(recorded, now Boot, left, length time.Duration) time.Duration {
	if recorded.ID == "" || recorded.ID != now.ID || recorded.Time > now.Time {
		return 0
	}
	return max(min(left, length)-(now.Time-recorded.Time), 0)
}
