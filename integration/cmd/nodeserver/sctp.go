package main

import (
	"fmt"
	"log"

	"golang.org/x/sys/unix"
)

// listenSCTP opens a one-to-one SCTP listener on 0.0.0.0:port (Go's net
// package has no SCTP).
func listenSCTP(port int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if err != nil {
		return -1, fmt.Errorf("sctp socket: %w", err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("sctp bind :%d: %w", port, err)
	}
	// A listener signs its cookies with net.sctp.cookie_hmac_alg: a kernel
	// without that hmac fails here with ENOSYS.
	if err := unix.Listen(fd, 128); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("sctp listen :%d: %w", port, err)
	}
	return fd, nil
}

func serveSCTP(ln int, reply []byte) {
	for {
		fd, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
		if err != nil {
			log.Printf("sctp accept: %v", err)
			continue
		}
		go func() {
			defer unix.Close(fd)
			if _, err := unix.Write(fd, reply); err != nil {
				return
			}
			// Wait (at most 5 s) for the client's close.
			unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
			buf := make([]byte, 256)
			for {
				if n, err := unix.Read(fd, buf); n <= 0 || err != nil {
					return
				}
			}
		}()
	}
}
