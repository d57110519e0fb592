// Command probe sends client traffic to a VIP (or straight to a node) and prints what
// happened as JSON. It talks to integration/cmd/nodeserver, which answers with its
// node name.
//
//	probe [flags] count  ADDR   N connections (TCP) or datagrams (UDP); per-node counts, conns/s
//	probe [flags] hold   ADDR   hold M TCP connections, ping each every -interval; which broke
//	probe [flags] steady ADDR   new connections at -rate/s; SIGUSR1 marks an event, the result
//	                            says how long after it the first new connection succeeded
//
// hold and steady run for -duration, or until SIGINT/SIGTERM when it is 0.
// -netns NAME sends from that network namespace (/run/netns/NAME) without `ip netns exec`.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/edgelb/edgelb/integration/probe"
)

func main() {
	ns := flag.String("netns", "", "network namespace to send from")
	proto := flag.String("proto", "tcp", "tcp or udp (hold is always tcp)")
	timeout := flag.Duration("timeout", time.Second, "per connection, datagram or ping")
	n := flag.Int("n", 100, "count: connections or datagrams")
	conc := flag.Int("c", 4, "count: concurrency; steady: workers")
	m := flag.Int("m", 20, "hold: connections to hold")
	interval := flag.Duration("interval", 100*time.Millisecond, "hold: ping interval per connection")
	rate := flag.Float64("rate", 50, "steady: new connections per second")
	duration := flag.Duration("duration", 0, "hold, steady: how long (0: until SIGINT/SIGTERM)")
	timeline := flag.Bool("timeline", false, "steady: include every attempt")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: probe [flags] count|hold|steady ADDR")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	o := probe.Options{Proto: *proto, Addr: flag.Arg(1), NetNS: *ns, Timeout: *timeout}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	var out any
	exit := 0
	switch flag.Arg(0) {
	case "count":
		res, err := probe.Count(ctx, o, *n, *conc)
		if err != nil {
			fail(err)
		}
		if res.OK == 0 {
			exit = 1
		}
		out = res
	case "hold":
		h, err := probe.StartHold(o, *m, *interval)
		if err != nil {
			fail(err)
		}
		<-ctx.Done()
		res := h.Stop()
		if len(res.Broken) > 0 {
			exit = 1
		}
		out = res
	case "steady":
		s, err := probe.StartSteady(o, *rate, *conc)
		if err != nil {
			fail(err)
		}
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
	wait:
		for {
			select {
			case <-usr1:
				s.Mark()
			case <-ctx.Done():
				break wait
			}
		}
		out = s.Stop(*timeline)
	default:
		flag.Usage()
		os.Exit(2)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	enc.Encode(out)
	os.Exit(exit)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "probe:", err)
	os.Exit(1)
}
