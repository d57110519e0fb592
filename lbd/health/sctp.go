package health

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// sctpAssociate sets up an SCTP association with ap and closes it (a
// graceful SHUTDOWN): the SCTP counterpart of a TCP connect check. Go's net
// package has no SCTP, so it uses the kernel's one-to-one socket style
// (SOCK_STREAM, IPPROTO_SCTP) through x/sys/unix, non-blocking, bounded by
// ctx. A host whose kernel has no SCTP (no sctp module) fails every probe
// with "protocol not supported", which the backend's last error shows.
func sctpAssociate(ctx context.Context, ap netip.AddrPort) error {
	fam := unix.AF_INET
	var sa unix.Sockaddr = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	if ap.Addr().Is6() && !ap.Addr().Is4In6() {
		fam = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	fd, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if err != nil {
		return fmt.Errorf("open an SCTP socket: %w", err)
	}
	defer unix.Close(fd)
	switch err := unix.Connect(fd, sa); {
	case err == nil:
		return nil
	case !errors.Is(err, unix.EINPROGRESS):
		return fmt.Errorf("sctp association with %s: %w", ap, err)
	}
	for {
		wait := -1
		if d, ok := ctx.Deadline(); ok {
			wait = int(time.Until(d).Milliseconds())
			if wait <= 0 {
				return fmt.Errorf("sctp association with %s: %w", ap, context.DeadlineExceeded)
			}
		}
		// Poll in slices of at most 100 ms so that a cancelled ctx without
		// a deadline is noticed too.
		if wait < 0 || wait > 100 {
			wait = 100
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(pfd, wait)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("sctp association with %s: poll: %w", ap, err)
		}
		if n == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("sctp association with %s: %w", ap, err)
			}
			continue
		}
		soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return fmt.Errorf("sctp association with %s: %w", ap, err)
		}
		if soErr != 0 {
			return fmt.Errorf("sctp association with %s: %w", ap, unix.Errno(soErr))
		}
		return nil
	}
}
