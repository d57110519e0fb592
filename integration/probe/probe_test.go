package probe

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// greeter answers each connection with name, like nodeserver, and reports
// the remote address it saw.
func greeter(t *testing.T, name string) (string, <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	seen := make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			seen <- c.RemoteAddr().String()
			c.Write([]byte(name + "\n"))
			c.Close()
		}
	}()
	return ln.Addr().String(), seen
}

// once reports the local address the server saw, with and without a chosen
// source, and still reports it when the connection fails.
func TestOnceReportsItsLocalAddress(t *testing.T) {
	addr, seen := greeter(t, "node1")
	name, local, err := once(Options{Addr: addr, Timeout: 2 * time.Second})
	if err != nil || name != "node1" {
		t.Fatalf("once = %q, %v", name, err)
	}
	if got := <-seen; got != local {
		t.Errorf("local address %q, but the server saw %q", local, got)
	}

	o := Options{Addr: addr, Timeout: 2 * time.Second}.WithSources([]netip.Addr{netip.MustParseAddr("127.0.0.2")})
	if _, local, err = once(o); err != nil {
		t.Fatal(err)
	}
	if got := <-seen; got != local || netip.MustParseAddrPort(got).Addr() != netip.MustParseAddr("127.0.0.2") {
		t.Errorf("from 127.0.0.2: local address %q, the server saw %q", local, got)
	}

	// A closed port: the connection fails, and its source is still known.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	_, local, err = once(Options{Addr: closed, Timeout: time.Second})
	if err == nil {
		t.Fatal("connect to a closed port succeeded")
	}
	if ap, perr := netip.ParseAddrPort(local); perr != nil || ap.Port() == 0 {
		t.Errorf("failed connection's local address %q (%v): want 127.0.0.1:PORT", local, err)
	}
}

func TestParseSNMPCounter(t *testing.T) {
	// As Linux 6.1 prints /proc/net/sctp/snmp: name, tab, value.
	text := "SctpCurrEstab                   \t0\nSctpT1InitExpireds              \t7\nSctpT1CookieExpireds            \t0\n"
	if v, err := parseSNMPCounter(text, "SctpT1InitExpireds"); err != nil || v != 7 {
		t.Errorf("SctpT1InitExpireds = %d, %v; want 7", v, err)
	}
	if _, err := parseSNMPCounter(text, "SctpT1Init"); err == nil {
		t.Error("a prefix of a counter's name matched")
	}
	if _, err := parseSNMPCounter("SctpT1InitExpireds x\n", "SctpT1InitExpireds"); err == nil {
		t.Error("a value that is not a number parsed")
	}
}

func TestSCTPSlowExplained(t *testing.T) {
	assoc := func(took time.Duration, init, other int) SCTPAssoc {
		return SCTPAssoc{Port: 40000, Took: took, INITRetransmits: init, OtherRetransmits: other}
	}
	for _, c := range []struct {
		s    SCTPSlow
		want bool
		says string
	}{
		{SCTPSlow{SCTPAssoc: assoc(3*time.Second, 1, 0), ReusedAfter: 5 * time.Second}, true, "ended 5s before"},
		{SCTPSlow{SCTPAssoc: assoc(3*time.Second, 1, 0)}, false, "a packet lost"},
		{SCTPSlow{SCTPAssoc: assoc(1500*time.Millisecond, 0, 0)}, true, "waited for CPU"},
		// A lost COOKIE ECHO or greeting waits as long, without an INIT retransmit.
		{SCTPSlow{SCTPAssoc: assoc(3*time.Second, 0, 1)}, false, "COOKIE ECHO/data"},
		// Port reuse costs one retransmit; a second, or no answer at all, is a loss.
		{SCTPSlow{SCTPAssoc: assoc(6*time.Second, 2, 0), ReusedAfter: time.Second}, false, "2 INIT"},
		{SCTPSlow{SCTPAssoc: assoc(6*time.Second, 1, 0), ReusedAfter: time.Second, Err: context.DeadlineExceeded}, false, "deadline"},
		{SCTPSlow{SCTPAssoc: assoc(6*time.Second, -1, -1), Err: context.DeadlineExceeded}, false, "unknown"},
		{SCTPSlow{SCTPAssoc: assoc(0, 0, 0), Err: errors.New("connection refused")}, false, "no retransmit (connection refused)"},
	} {
		if got := c.s.Explained(); got != c.want {
			t.Errorf("%s: Explained() = %v, want %v", c.s, got, c.want)
		}
		if !strings.Contains(c.s.String(), c.says) {
			t.Errorf("%q does not say %q", c.s, c.says)
		}
	}
}
