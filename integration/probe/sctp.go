package probe

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgelb/edgelb/integration/netns"
)

// SCTP: Go's net package has none, so the client and nodeserver's listener
// use the kernel's one-to-one SCTP sockets (SOCK_STREAM, IPPROTO_SCTP)
// through x/sys/unix. In the guest, a process per association (socat) cost
// seconds each, too slow to count hundreds.

// SCTPSockaddr is ap as a socket address and its family.
func SCTPSockaddr(ap netip.AddrPort) (int, unix.Sockaddr) {
	if a := ap.Addr().Unmap(); a.Is4() {
		return unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	}
	return unix.AF_INET6, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

// waitFD polls fd for ev until deadline.
func waitFD(fd int, ev int16, deadline time.Time) error {
	for {
		ms := int(time.Until(deadline).Milliseconds())
		if ms <= 0 {
			return context.DeadlineExceeded
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: ev}}, ms)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
	}
}

// An SCTPAssoc is one association SCTPOnce opened (or tried to).
type SCTPAssoc struct {
	Node string        // the node's greeting, "" when it failed
	Port int           // the client's local port (the kernel picks it at random)
	Took time.Duration // connect to greeting
	// INITRetransmits is how often the client's T1-init timer expired
	// meanwhile (SctpT1InitExpireds of the client's namespace) and
	// OtherRetransmits how often its T1-cookie and T3-rtx timers did (a
	// COOKIE ECHO or data sent again); -1 when they could not be read.
	INITRetransmits, OtherRetransmits int
}

// SCTPOnce opens one SCTP association with addr from namespace ns (""
// = the caller's), reads the node's greeting line and closes.
func SCTPOnce(ns, addr string, timeout time.Duration) (SCTPAssoc, error) {
	a := SCTPAssoc{INITRetransmits: -1, OtherRetransmits: -1}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return a, err
	}
	err = netns.Do(ns, func() error {
		before, rerr := retransmitCounters()
		t0 := time.Now()
		defer func() {
			a.Took = time.Since(t0)
			if after, err := retransmitCounters(); rerr == nil && err == nil {
				a.INITRetransmits = after[0] - before[0]
				a.OtherRetransmits = after[1] - before[1] + after[2] - before[2]
			}
		}()
		fam, sa := SCTPSockaddr(ap)
		fd, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
		if err != nil {
			return fmt.Errorf("sctp socket: %w", err)
		}
		defer unix.Close(fd)
		deadline := time.Now().Add(timeout)
		err = unix.Connect(fd, sa)
		// The port is bound by connect, so it is known even when no answer comes.
		if local, err := unix.Getsockname(fd); err == nil {
			switch l := local.(type) {
			case *unix.SockaddrInet4:
				a.Port = l.Port
			case *unix.SockaddrInet6:
				a.Port = l.Port
			}
		}
		if err != nil && !errors.Is(err, unix.EINPROGRESS) {
			return fmt.Errorf("sctp connect %s from port %d: %w", addr, a.Port, err)
		}
		if err := waitFD(fd, unix.POLLOUT, deadline); err != nil {
			return fmt.Errorf("sctp connect %s from port %d: %w", addr, a.Port, err)
		}
		if e, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || e != 0 {
			return fmt.Errorf("sctp connect %s from port %d: %w", addr, a.Port, errors.Join(err, unix.Errno(e)))
		}
		var got []byte
		buf := make([]byte, 256)
		for !strings.Contains(string(got), "\n") {
			if err := waitFD(fd, unix.POLLIN, deadline); err != nil {
				return fmt.Errorf("sctp read from %s: %w", addr, err)
			}
			n, err := unix.Read(fd, buf)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return fmt.Errorf("sctp read from %s: %w", addr, err)
			}
			if n == 0 {
				return fmt.Errorf("sctp read from %s: closed after %q", addr, got)
			}
			got = append(got, buf[:n]...)
		}
		a.Node = strings.TrimSpace(strings.SplitN(string(got), "\n", 2)[0])
		return nil
	})
	return a, err
}

// retransmitCounters reads SctpT1InitExpireds, SctpT1CookieExpireds and
// SctpT3RtxExpireds of the calling thread's network namespace
// (/proc/thread-self: netns.Do switches only this thread).
func retransmitCounters() ([3]int, error) {
	var out [3]int
	b, err := os.ReadFile("/proc/thread-self/net/sctp/snmp")
	if err != nil {
		return out, err
	}
	for i, name := range []string{"SctpT1InitExpireds", "SctpT1CookieExpireds", "SctpT3RtxExpireds"} {
		if out[i], err = parseSNMPCounter(string(b), name); err != nil {
			return out, err
		}
	}
	return out, nil
}

// parseSNMPCounter finds "name value" in /proc/net/sctp/snmp's text.
func parseSNMPCounter(text, name string) (int, error) {
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == name {
			return strconv.Atoi(f[1])
		}
	}
	return 0, fmt.Errorf("no %s in /proc/net/sctp/snmp", name)
}

// SCTPReuseWindow is how long after an association ended a new one from
// the same client port meets IPVS's drop: IPVS keeps the closed association
// (CLOSED, 61 s), and while conntrack still holds its entry too (CLOSED:
// 10 s after the last packet) that entry is confirmed, so IPVS
// (net.ipv4.vs.conn_reuse_mode=1) drops the new INIT once so both go; the
// client sends it again after SCTP's initial RTO of 3 s and it is scheduled
// afresh. Later, with no conntrack entry left, IPVS reschedules without the
// drop. 10 s and some slack for the guest's clock.
const SCTPReuseWindow = 12 * time.Second

// SCTPClient opens associations from one namespace one after another and
// remembers when each local port's last association ended, so that an
// association that waited for an INIT retransmit can be told apart: a port
// reused inside SCTPReuseWindow explains one; anything else is a lost packet.
type SCTPClient struct {
	NS      string
	Timeout time.Duration
	ended   map[int]time.Time // local port → when its last association ended
}

// SCTPSlow describes an association that took a second or more, or failed.
type SCTPSlow struct {
	SCTPAssoc
	Err error
	// ReusedAfter is the time since the port's previous association from
	// this client ended, 0 when none ended within SCTPReuseWindow.
	ReusedAfter time.Duration
}

// Explained says whether the wait is the port-reuse drop described at
// SCTPReuseWindow (answered after exactly one INIT retransmit), or the
// client merely got no CPU (answered, nothing sent again).
func (s SCTPSlow) Explained() bool {
	if s.Err != nil || s.OtherRetransmits != 0 {
		return false
	}
	return s.INITRetransmits == 0 || s.INITRetransmits == 1 && s.ReusedAfter > 0
}

func (s SCTPSlow) String() string {
	var why string
	switch {
	case s.INITRetransmits < 0 || s.OtherRetransmits < 0:
		why = "retransmits unknown"
	case s.OtherRetransmits > 0:
		why = fmt.Sprintf("%d INIT and %d COOKIE ECHO/data retransmit(s): a packet lost", s.INITRetransmits, s.OtherRetransmits)
	case s.INITRetransmits == 0 && s.Err == nil:
		why = "no retransmit (the client waited for CPU)"
	case s.INITRetransmits == 0:
		why = "no retransmit"
	case s.ReusedAfter > 0:
		why = fmt.Sprintf("%d INIT retransmit(s); port's last association ended %s before (IPVS drops the INIT of a reused port once)", s.INITRetransmits, s.ReusedAfter.Round(time.Millisecond))
	default:
		why = fmt.Sprintf("%d INIT retransmit(s) on a port not used within %s: a packet lost", s.INITRetransmits, SCTPReuseWindow)
	}
	out := fmt.Sprintf("port %d took %s: %s", s.Port, s.Took.Round(time.Millisecond), why)
	if s.Err != nil {
		out += fmt.Sprintf(" (%v)", s.Err)
	}
	return out
}

// Count opens n associations with addr one after another and counts the
// answering nodes; associations that took a second or more are returned
// too, each with what explains it.
func (c *SCTPClient) Count(ctx context.Context, addr string, n int) (CountResult, []SCTPSlow) {
	if c.ended == nil {
		c.ended = map[int]time.Time{}
	}
	r := CountResult{Proto: "sctp", Addr: addr, Counts: map[string]int{}}
	var slow []SCTPSlow
	t0 := time.Now()
	for range n {
		if ctx.Err() != nil {
			break
		}
		r.Sent++
		start := time.Now()
		a, err := SCTPOnce(c.NS, addr, c.Timeout)
		if a.Port != 0 {
			var reused time.Duration
			if prev, ok := c.ended[a.Port]; ok && start.Sub(prev) < SCTPReuseWindow {
				reused = start.Sub(prev)
			}
			c.ended[a.Port] = time.Now()
			if err != nil || a.Took >= time.Second {
				slow = append(slow, SCTPSlow{SCTPAssoc: a, Err: err, ReusedAfter: reused})
			}
		}
		if err != nil {
			r.Errors++
			if len(r.Samples) < 5 {
				r.Samples = append(r.Samples, err.Error())
			}
			continue
		}
		r.OK++
		r.Counts[a.Node]++
	}
	r.Elapsed = time.Since(t0)
	if s := r.Elapsed.Seconds(); s > 0 {
		r.PerSecond = float64(r.OK) / s
	}
	return r, slow
}
