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
	// meanwhile (SctpT1InitExpireds of the client's namespace), -1 when it
	// could not be read.
	INITRetransmits int
}

// SCTPOnce opens one SCTP association with addr from namespace ns (""
// = the caller's), reads the node's greeting line and closes.
func SCTPOnce(ns, addr string, timeout time.Duration) (SCTPAssoc, error) {
	a := SCTPAssoc{INITRetransmits: -1}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return a, err
	}
	err = netns.Do(ns, func() error {
		before, rerr := t1InitExpireds()
		t0 := time.Now()
		defer func() {
			a.Took = time.Since(t0)
			if after, err := t1InitExpireds(); rerr == nil && err == nil {
				a.INITRetransmits = after - before
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

// t1InitExpireds reads SctpT1InitExpireds of the calling thread's network
// namespace (/proc/thread-self: netns.Do switches only this thread).
func t1InitExpireds() (int, error) {
	b, err := os.ReadFile("/proc/thread-self/net/sctp/snmp")
	if err != nil {
		return 0, err
	}
	return parseSNMPCounter(string(b), "SctpT1InitExpireds")
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

// SCTPReuseWindow is how long IPVS keeps an association it saw closed
// (IP_VS_SCTP_S_CLOSED: 61 s, not tunable). A new association from the same
// client port inside it meets that entry, whose conntrack entry is
// confirmed, and IPVS (net.ipv4.vs.conn_reuse_mode=1) drops its INIT so
// both go; the client's INIT retransmit, after SCTP's initial RTO of 3 s,
// is scheduled afresh.
const SCTPReuseWindow = 61 * time.Second

// SCTPClient opens associations from one namespace one after another and
// remembers the local ports it used, so that an association that waited
// for an INIT retransmit can be told apart: a port reused inside
// SCTPReuseWindow explains it; anything else is a lost packet.
type SCTPClient struct {
	NS      string
	Timeout time.Duration
	used    map[int]time.Time // local port → when its last association started
}

// SCTPSlow describes an association that took a second or more.
type SCTPSlow struct {
	SCTPAssoc
	Err error
	// ReusedAfter is the time since the port's previous association from
	// this client started, 0 when it had none within SCTPReuseWindow.
	ReusedAfter time.Duration
}

// Explained says whether the wait is the port-reuse drop described at
// SCTPReuseWindow, or the client merely got no CPU (no INIT retransmit).
func (s SCTPSlow) Explained() bool {
	return s.ReusedAfter > 0 || s.INITRetransmits == 0
}

func (s SCTPSlow) String() string {
	why := "INIT retransmits unknown"
	switch {
	case s.INITRetransmits == 0:
		why = "no INIT retransmit (the client waited for CPU)"
	case s.INITRetransmits > 0 && s.ReusedAfter > 0:
		why = fmt.Sprintf("%d INIT retransmit(s); port last used %s before (IPVS drops the INIT of a reused port)", s.INITRetransmits, s.ReusedAfter.Round(time.Millisecond))
	case s.INITRetransmits > 0:
		why = fmt.Sprintf("%d INIT retransmit(s) on a port not used within %s: unexplained", s.INITRetransmits, SCTPReuseWindow)
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
	if c.used == nil {
		c.used = map[int]time.Time{}
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
			if prev, ok := c.used[a.Port]; ok && start.Sub(prev) < SCTPReuseWindow {
				reused = start.Sub(prev)
			}
			c.used[a.Port] = start
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
