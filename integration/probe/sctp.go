package probe

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
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

// SCTPOnce opens one SCTP association with addr from namespace ns (""
// = the caller's), reads the node's greeting line and closes; it returns
// the node's name.
func SCTPOnce(ns, addr string, timeout time.Duration) (string, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return "", err
	}
	var name string
	err = netns.Do(ns, func() error {
		fam, sa := SCTPSockaddr(ap)
		fd, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
		if err != nil {
			return fmt.Errorf("sctp socket: %w", err)
		}
		defer unix.Close(fd)
		deadline := time.Now().Add(timeout)
		if err := unix.Connect(fd, sa); err != nil && !errors.Is(err, unix.EINPROGRESS) {
			return fmt.Errorf("sctp connect %s: %w", addr, err)
		}
		if err := waitFD(fd, unix.POLLOUT, deadline); err != nil {
			return fmt.Errorf("sctp connect %s: %w", addr, err)
		}
		if e, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || e != 0 {
			return fmt.Errorf("sctp connect %s: %w", addr, errors.Join(err, unix.Errno(e)))
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
		name = strings.TrimSpace(strings.SplitN(string(got), "\n", 2)[0])
		return nil
	})
	return name, err
}

// SCTPCount opens n associations one after another and counts the answering nodes.
func SCTPCount(ctx context.Context, ns, addr string, n int, timeout time.Duration) CountResult {
	r := CountResult{Proto: "sctp", Addr: addr, Counts: map[string]int{}}
	t0 := time.Now()
	for range n {
		if ctx.Err() != nil {
			break
		}
		r.Sent++
		name, err := SCTPOnce(ns, addr, timeout)
		if err != nil {
			r.Errors++
			if len(r.Samples) < 5 {
				r.Samples = append(r.Samples, err.Error())
			}
			continue
		}
		r.OK++
		r.Counts[name]++
	}
	r.Elapsed = time.Since(t0)
	if s := r.Elapsed.Seconds(); s > 0 {
		r.PerSecond = float64(r.OK) / s
	}
	return r
}
