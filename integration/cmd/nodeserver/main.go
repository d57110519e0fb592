// Command nodeserver stands in for a Kubernetes node's NodePort in the UML scenarios:
// it answers with its node name so a client can tell which node a VIP sent it to.
//
//	nodeserver --name node1 [--port 30080,30081] [--health-port 30256] [--unhealthy] [--sctp-port 30090]
//
// On each port, TCP and UDP, IPv4 and IPv6:
//   - TCP: on accept it writes "NAME\n"; then for every line it reads it writes "NAME\n"
//     again (so a long-lived connection can be pinged); the line "whoami" gets
//     "NAME CLIENT-ADDRESS\n", the source address the node sees (direct routing
//     keeps the client's, NAT does not); the line "stream" starts "NAME\n" every
//     20 ms, unasked, beside the answers (a server push: the node speaks first);
//     "stream 1s" every second (any Go duration, at least 1 ms).
//   - UDP: every datagram is answered with "NAME\n".
//   - SCTP (--sctp-port, IPv4): each association gets "NAME\n", then the node
//     waits for the client to close (so the line is never cut off by our own
//     close) and closes too.
//
// On the health port, HTTP: GET /healthz answers 200 "ok NAME" or 503 "unhealthy NAME"
// (kube-proxy's healthCheckNodePort behaves alike); POST or PUT /healthz?status=ok|fail
// flips it; GET / answers "NAME\n".
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	name := flag.String("name", "", "node name to answer with (default: host name)")
	ports := flag.String("port", "30080", "comma-separated ports to serve on, TCP and UDP")
	healthPort := flag.Int("health-port", 30256, "HTTP /healthz port (0: none)")
	unhealthy := flag.Bool("unhealthy", false, "start with /healthz answering 503")
	sctpPort := flag.Int("sctp-port", 0, "SCTP port to serve on, IPv4 (0: none)")
	flag.Parse()
	if *name == "" {
		*name, _ = os.Hostname()
	}
	log.SetPrefix("nodeserver " + *name + ": ")
	log.SetFlags(log.Lmicroseconds)
	reply := []byte(*name + "\n")

	if *sctpPort != 0 {
		fd, err := listenSCTP(*sctpPort)
		if err != nil {
			log.Fatal(err)
		}
		go serveSCTP(fd, reply)
	}
	for _, p := range strings.Split(*ports, ",") {
		if strings.TrimSpace(p) == "" {
			continue
		}
		port, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil {
			log.Fatalf("bad port %q", p)
		}
		// "[::]" with the default bindv6only=0 serves IPv4 too.
		addr := fmt.Sprintf("[::]:%d", port)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			log.Fatal(err)
		}
		go serveTCP(ln, reply)
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			log.Fatal(err)
		}
		go serveUDP(pc, reply)
	}

	var healthy, flap atomic.Bool
	healthy.Store(!*unhealthy)
	// flap: each prober (by source address) gets 200 and 503 in turn, the
	// pattern rise/fall must damp.
	var flapMu sync.Mutex
	flapCount := map[string]int{}
	if *healthPort != 0 {
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost || r.Method == http.MethodPut {
				switch r.URL.Query().Get("status") {
				case "ok":
					healthy.Store(true)
					flap.Store(false)
				case "fail":
					healthy.Store(false)
					flap.Store(false)
				case "flap":
					flap.Store(true)
				default:
					http.Error(w, "status=ok|fail|flap", http.StatusBadRequest)
					return
				}
				log.Printf("healthz set to %s", r.URL.Query().Get("status"))
				w.WriteHeader(http.StatusNoContent)
				return
			}
			ok := healthy.Load()
			if flap.Load() {
				host, _, _ := net.SplitHostPort(r.RemoteAddr)
				flapMu.Lock()
				flapCount[host]++
				ok = flapCount[host]%2 == 0
				flapMu.Unlock()
			}
			if ok {
				fmt.Fprintf(w, "ok %s\n", *name)
				return
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "unhealthy %s\n", *name)
		})
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { w.Write(reply) })
		ln, err := net.Listen("tcp", fmt.Sprintf("[::]:%d", *healthPort))
		if err != nil {
			log.Fatal(err)
		}
		go func() { log.Fatal(http.Serve(ln, mux)) }()
	}
	log.Printf("serving tcp+udp on %s, health on %d", *ports, *healthPort)
	select {}
}

func serveTCP(ln net.Listener, reply []byte) {
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Printf("accept: %v", err)
			continue
		}
		go func() {
			defer c.Close()
			var wmu sync.Mutex // the stream and the answers write alike
			write := func(b []byte) error {
				wmu.Lock()
				defer wmu.Unlock()
				_, err := c.Write(b)
				return err
			}
			if err := write(reply); err != nil {
				return
			}
			r := bufio.NewReader(c)
			whoami := []byte(strings.TrimSuffix(string(reply), "\n") + " " + c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap().String() + "\n")
			done := make(chan struct{})
			defer close(done)
			for {
				line, err := r.ReadSlice('\n')
				if err != nil {
					return
				}
				out := reply
				cmd, arg, _ := strings.Cut(strings.TrimSpace(string(line)), " ")
				switch cmd {
				case "whoami":
					out = whoami
				case "stream":
					// The node speaks first: its name every 20 ms (or every
					// arg) until the connection ends (a server push; see the
					// e2e takeover guard and tickle ACKs).
					every := 20 * time.Millisecond
					if d, err := time.ParseDuration(arg); err == nil && d >= time.Millisecond {
						every = d
					}
					go func() {
						t := time.NewTicker(every)
						defer t.Stop()
						for {
							select {
							case <-done:
								return
							case <-t.C:
								if write(reply) != nil {
									return
								}
							}
						}
					}()
					continue
				}
				if err := write(out); err != nil {
					return
				}
			}
		}()
	}
}

func serveUDP(pc net.PacketConn, reply []byte) {
	buf := make([]byte, 2048)
	for {
		_, addr, err := pc.ReadFrom(buf)
		if err != nil {
			log.Printf("udp read: %v", err)
			continue
		}
		pc.WriteTo(reply, addr)
	}
}
