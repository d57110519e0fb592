package lease

import (
	"testing"
	"time"
)

type fakeClock struct{ t time.Duration }

func (c *fakeClock) Now() time.Duration { return c.t }

const ms = time.Millisecond

func three(clock *fakeClock) *Lease {
	l := New("a", 250*ms, clock)
	l.SetVoters([]string{"a", "b", "c"})
	return l
}

func TestRenewAndExpire(t *testing.T) {
	c := &fakeClock{t: time.Second}
	l := three(c)
	if l.Valid() {
		t.Fatal("valid before any answer")
	}
	sent := c.t
	c.t += 10 * ms
	l.Answered("b", sent)
	if !l.Valid() {
		t.Fatal("not valid after a majority (self + b) answered")
	}
	if got := l.Remaining(); got != 240*ms {
		t.Errorf("remaining %v, want 240ms: counted from the probe's send time", got)
	}
	c.t = sent + 249*ms
	if !l.Valid() {
		t.Error("expired before send time + length")
	}
	c.t = sent + 250*ms
	if l.Valid() {
		t.Error("still valid at send time + length")
	}
	// Renewed by the next answer, from its own send time.
	l.Answered("c", sent+200*ms)
	if got := l.Remaining(); got != 200*ms {
		t.Errorf("remaining after c's answer %v, want 200ms", got)
	}
}

// The quorum's k-th most recent answer sets the expiry: in five voters a
// member needs two others, and the older of the two best answers counts.
func TestMajorityOfFive(t *testing.T) {
	c := &fakeClock{t: time.Second}
	l := New("a", 250*ms, c)
	l.SetVoters([]string{"a", "b", "c", "d", "e"})
	l.Answered("b", c.t-10*ms)
	if l.Valid() {
		t.Fatal("valid with 2 of 5")
	}
	l.Answered("c", c.t-100*ms)
	l.Answered("d", c.t-200*ms)
	if got := l.Remaining(); got != 150*ms {
		t.Errorf("remaining %v, want 150ms (c's answer, the 2nd most recent)", got)
	}
}

// A raft election during the lease changes nothing: the lease knows no
// leader; an owner that keeps a majority keeps serving while the old leader
// (b) is silent and a new one is being elected.
func TestElectionDuringLease(t *testing.T) {
	c := &fakeClock{t: time.Second}
	l := three(c)
	l.Answered("b", c.t)
	l.Answered("c", c.t)
	for i := 0; i < 20; i++ { // b (the leader) is dead; c keeps answering
		c.t += 50 * ms
		l.Answered("c", c.t-5*ms)
		if !l.Valid() {
			t.Fatalf("lease lost at %v while c answers", c.t)
		}
	}
}

// A late answer to an old probe extends nothing past its send time + length,
// and a storm of answers out of order keeps the latest.
func TestLateAnswersAndStorm(t *testing.T) {
	c := &fakeClock{t: 10 * time.Second}
	l := three(c)
	l.Answered("b", c.t-300*ms) // arrives now, probe sent 300ms ago
	if l.Valid() {
		t.Error("an answer to a probe sent longer than the lease ago renewed it")
	}
	for i := 0; i < 1000; i++ {
		l.Answered("b", c.t-time.Duration(i%200)*ms)
	}
	l.Answered("b", c.t-150*ms) // out of order, older than the best
	if got := l.Remaining(); got != 250*ms {
		t.Errorf("remaining %v, want 250ms from the latest send time", got)
	}
	// A send time in the future is not one of ours; it must not extend.
	l.Answered("c", c.t+time.Hour)
	c.t += 300 * ms
	if l.Valid() {
		t.Error("a future send time kept the lease valid")
	}
}

func TestNonVotersDoNotCount(t *testing.T) {
	c := &fakeClock{t: time.Second}
	l := three(c)
	l.Answered("x", c.t) // a non-voter (joining member) answers
	l.Answered("y", c.t)
	if l.Valid() {
		t.Error("valid on non-voters' answers")
	}
	// A member that leaves the configuration stops counting.
	l.Answered("b", c.t)
	l.SetVoters([]string{"a", "c", "d"})
	if l.Valid() {
		t.Error("valid on the answer of a member no longer a voter")
	}
	// A non-voter itself needs a majority of the voters, not one less.
	n := New("x", 250*ms, c)
	n.SetVoters([]string{"a", "b", "c"})
	n.Answered("a", c.t)
	if n.Valid() {
		t.Error("non-voter valid with one of three voters")
	}
	n.Answered("b", c.t)
	if !n.Valid() {
		t.Error("non-voter not valid with two of three voters")
	}
}

func TestSingleMember(t *testing.T) {
	c := &fakeClock{t: time.Second}
	l := New("a", 250*ms, c)
	if l.Valid() {
		t.Error("valid with no configuration known")
	}
	l.SetVoters([]string{"a"})
	if got := l.Remaining(); got != 250*ms {
		t.Errorf("single voter: remaining %v, want the full length", got)
	}
}

// The lease reads a monotonic clock only; the one wall-clock input, a
// renewal recorded before a restart, is refused when the clock has stepped
// back past it and never carries more than the length.
func TestClockJump(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	if got := Carried(now.Add(-100*ms), now, 250*ms); got != 150*ms {
		t.Errorf("carried %v, want 150ms", got)
	}
	// The wall clock stepped back 1h after the record: the record lies in
	// the future and would extend the lease by the step.
	if got := Carried(now.Add(time.Hour), now, 250*ms); got != 0 {
		t.Errorf("a record from the future carried %v, want 0", got)
	}
	// Stepped forward: the lease is simply over.
	if got := Carried(now.Add(-time.Hour), now, 250*ms); got != 0 {
		t.Errorf("an old record carried %v", got)
	}
	if got := Carried(time.Time{}, now, 250*ms); got != 0 {
		t.Errorf("no record carried %v", got)
	}
	// The system clock is monotonic: Until, taken from it, carries a
	// monotonic reading, so time.Until ignores wall steps.
	l := New("a", 250*ms, nil)
	l.SetVoters([]string{"a"})
	if u := l.Until(); u == u.Round(0) {
		t.Error("Until has no monotonic reading")
	}
	a := System.Now()
	time.Sleep(ms)
	if b := System.Now(); b <= a {
		t.Errorf("system clock went from %v to %v", a, b)
	}
}

// A configuration a peer reports that is newer than this member's own (a
// promotion not applied here yet) must hold too: with a fourth voter d, a
// needs two others, so b alone no longer makes its lease.
func TestNewerConfigReported(t *testing.T) {
	c := &fakeClock{t: time.Second}
	l := New("a", 250*ms, c)
	l.SetConfig(5, []string{"a", "b", "c"})
	l.Answered("b", c.t)
	if !l.Valid() {
		t.Fatal("not valid with a and b of three")
	}
	l.Reported("b", 4, []string{"a", "b"}) // older: ignored
	if !l.Valid() {
		t.Fatal("an older configuration changed the lease")
	}
	l.Reported("b", 7, []string{"a", "b", "c", "d"})
	if l.Valid() {
		t.Fatal("valid with a and b of four voters once a peer reported the promotion")
	}
	l.Answered("c", c.t)
	if !l.Valid() {
		t.Fatal("not valid with a, b and c of four")
	}
	// This member applies the configuration: its own counts again alone.
	l.SetConfig(7, []string{"a", "b", "c", "d"})
	c.t += 10 * ms
	l.Answered("b", c.t)
	if got := l.Remaining(); got != 240*ms {
		t.Errorf("remaining %v, want 240ms (the older of b's and c's answers)", got)
	}
}

// A newer configuration that leaves this voter out (its removal, which it
// never received) ends its lease, whatever the others answer.
func TestRemovedByNewerConfig(t *testing.T) {
	c := &fakeClock{t: time.Second}
	l := New("c", 250*ms, c)
	l.SetConfig(5, []string{"a", "b", "c"})
	l.Answered("a", c.t)
	l.Answered("b", c.t)
	if !l.Valid() {
		t.Fatal("not valid with all three")
	}
	l.Reported("a", 8, []string{"a", "b"})
	if l.Valid() {
		t.Error("valid after a peer reported a configuration without this member")
	}
	if r, ok := l.Removed(); !ok || r.By != "a" || r.Index != 8 {
		t.Errorf("Removed = %+v, %v; want a's configuration 8", r, ok)
	}
	l.Answered("a", c.t)
	l.Answered("b", c.t)
	if l.Valid() {
		t.Error("the others' answers renewed the lease of a removed member")
	}
}

// A reported configuration counts only while its peer keeps reporting it:
// one the peer's next view no longer carries (truncated, never committed)
// or one from a peer silent for a lease stops counting.
func TestReportedConfigFades(t *testing.T) {
	c := &fakeClock{t: time.Second}
	l := New("c", 250*ms, c)
	l.SetConfig(5, []string{"a", "b", "c"})
	renew := func() { l.Answered("a", c.t); l.Answered("b", c.t) }
	renew()
	l.Reported("a", 8, []string{"a", "b"}) // a's uncommitted removal of c
	if l.Valid() {
		t.Fatal("valid while a reports a configuration without c")
	}
	l.Reported("a", 5, []string{"a", "b", "c"}) // truncated: a is back to 5
	renew()
	if !l.Valid() {
		t.Error("not valid once a reports c's own configuration again")
	}
	l.Reported("b", 8, []string{"a", "b"})
	if l.Valid() {
		t.Fatal("valid while b reports a configuration without c")
	}
	c.t += 251 * ms // b says nothing more
	renew()
	if !l.Valid() {
		t.Error("a configuration b reported more than a lease ago still counts")
	}
}

// Revoke ends the lease at once; only answers after it renew.
func TestRevoke(t *testing.T) {
	c := &fakeClock{t: time.Second}
	l := three(c)
	l.Answered("b", c.t)
	l.Answered("c", c.t)
	l.Revoke()
	if l.Valid() {
		t.Fatal("valid after Revoke")
	}
	c.t += 10 * ms
	l.Answered("c", c.t)
	if !l.Valid() {
		t.Fatal("a later answer did not renew")
	}
}

// A lease carried over a restart holds without answers, before the
// configuration is known and after, until what was left of it runs out;
// answers extend it as usual; a Revoke or a removal ends it.
func TestCarry(t *testing.T) {
	c := &fakeClock{t: time.Second}
	l := New("a", 250*ms, c)
	if l.Valid() || l.CarriedLeft() > 0 {
		t.Fatal("valid with nothing carried")
	}
	l.Carry(100 * ms)
	if !l.Valid() || l.Remaining() != 100*ms || l.CarriedLeft() != 100*ms {
		t.Fatalf("carried 100ms: valid %v, remaining %v, carried left %v", l.Valid(), l.Remaining(), l.CarriedLeft())
	}
	l.SetVoters([]string{"a", "b", "c"}) // the configuration is read after the start
	c.t += 60 * ms
	if got := l.Remaining(); got != 40*ms {
		t.Errorf("remaining %v 60ms into a carried 100ms, want 40ms", got)
	}
	c.t += 40 * ms
	if l.Valid() {
		t.Error("valid once the carried lease ran out with no answer")
	}
	// Answers past the carried part extend it; the carried part outlasting
	// them still counts.
	l.Carry(200 * ms)
	l.Answered("b", c.t-200*ms)
	l.Answered("c", c.t-200*ms)
	if got := l.Remaining(); got != 200*ms {
		t.Errorf("remaining %v: the carried 200ms outlast answers renewing for 50ms", got)
	}
	l.Answered("b", c.t)
	if got := l.Remaining(); got != 250*ms {
		t.Errorf("remaining %v after a fresh majority, want the full 250ms", got)
	}
	l.Revoke()
	if l.Valid() || l.CarriedLeft() > 0 {
		t.Error("a revoked lease still holds what was carried")
	}
	if l.InContact() {
		t.Error("in contact after a Revoke")
	}
	c.t += 10 * ms
	l.Carry(200 * ms)
	if l.InContact() {
		t.Error("in contact on a carried lease alone")
	}
	l.Answered("b", c.t)
	if !l.InContact() {
		t.Error("not in contact with a majority answering")
	}
	// Under a newer configuration a peer reports (d promoted), what was
	// carried does not stand in for d's answers.
	l.Revoke()
	l.Carry(200 * ms)
	l.SetConfig(5, []string{"a", "b", "c"})
	l.Reported("b", 7, []string{"a", "b", "c", "d"})
	l.Answered("b", c.t)
	if l.Valid() {
		t.Error("valid under a newer configuration on the carried lease and one of three others")
	}
	l.Answered("d", c.t)
	if !l.Valid() {
		t.Error("not valid with b and d answering under the newer configuration")
	}
	// A removed member's carried lease holds nothing either.
	r := New("c", 250*ms, c)
	r.SetConfig(5, []string{"a", "b", "c"})
	r.Carry(200 * ms)
	r.Answered("a", c.t)
	r.Answered("b", c.t)
	r.Reported("a", 8, []string{"a", "b"})
	if r.Valid() {
		t.Error("a removed member's carried lease is valid")
	}
	if r.InContact() {
		t.Error("a removed member is in contact")
	}
}

func TestCarriedBoot(t *testing.T) {
	rec := Boot{ID: "x", Time: 10 * time.Second}
	for _, tc := range []struct {
		name       string
		now        Boot
		left, want time.Duration
	}{
		{"same boot", Boot{"x", 10*time.Second + 100*ms}, 250 * ms, 150 * ms},
		{"left capped by the length", Boot{"x", 10*time.Second + 100*ms}, time.Hour, 150 * ms},
		{"run out", Boot{"x", 11 * time.Second}, 250 * ms, 0},
		{"another boot", Boot{"y", 10*time.Second + ms}, 250 * ms, 0},
		{"from the future", Boot{"x", 9 * time.Second}, 250 * ms, 0},
	} {
		if got := CarriedBoot(rec, tc.now, tc.left, 250*ms); got != tc.want {
			t.Errorf("%s: carried %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := CarriedBoot(Boot{}, Boot{"x", 0}, 250*ms, 250*ms); got != 0 {
		t.Errorf("no record carried %v", got)
	}
	b, err := BootNow()
	if err != nil || b.ID == "" || b.Time <= 0 {
		t.Errorf("BootNow = %+v, %v", b, err)
	}
	// The id is kept after the first read; the clock moves on.
	b2, err := BootNow()
	if err != nil || b2.ID != b.ID || b2.Time < b.Time {
		t.Errorf("BootNow again = %+v, %v; first %+v", b2, err, b)
	}
}

// Answers wakes the one reader that passes the lease on to the fence when an
// answer to a newer probe arrives; an answer that extends nothing (an older
// or repeated probe, a send time in the future) does not, and any number of
// answers wait as one token.
func TestAnswersSignalsNewerAnswers(t *testing.T) {
	c := &fakeClock{t: time.Second}
	l := three(c)
	pending := func() bool {
		select {
		case <-l.Answers():
			return true
		default:
			return false
		}
	}
	if pending() {
		t.Fatal("a token before any answer")
	}
	first := c.t
	c.t += 100 * ms
	second := c.t
	c.t += 10 * ms
	l.Answered("b", second)
	l.Answered("c", second)
	if !pending() {
		t.Fatal("no token after answers to a newer probe")
	}
	if pending() {
		t.Error("two answers left two tokens; want them coalesced into one")
	}
	l.Answered("b", first)  // older than what b answered before
	l.Answered("b", second) // the same probe again
	l.Answered("c", c.t+ms) // not a probe of ours
	if pending() {
		t.Error("a token for answers that extend nothing")
	}
	c.t += 100 * ms
	l.Answered("b", c.t)
	if !pending() {
		t.Error("no token for the next probe's answer")
	}
}
