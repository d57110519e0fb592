// Package probe sends client traffic through a VIP and reports what happened: which
// node answered how often, which long-lived connections broke, how long new
// connections failed after an event. It talks to integration/cmd/nodeserver, which
// answers every TCP connection, every line on it and every UDP datagram with its node
// name. Used in-process by the guest scenarios and by the probe command.
//
// Every worker goroutine can run inside a named network namespace (Options.NetNS):
// it locks its thread and setns(2)s into it, so no `ip netns exec` is needed.
package probe

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgelb/edgelb/integration/netns"
)

// Options common to every mode.
type Options struct {
	Proto   string        // "tcp" (default) or "udp"
	Addr    string        // VIP:port or [VIP6]:port
	NetNS   string        // namespace to send from ("" = the caller's)
	Timeout time.Duration // per connection / datagram (default 1s)
	// Sources, when set, are the local addresses connections come from, taken in turn
	// (many clients: source-hashing schedulers); default the kernel's choice.
	Sources []netip.Addr
	// NoRetransmit (TCP) fails a connection that needed a retransmission
	// (a lost SYN or request) even if it was answered within Timeout: with a
	// Timeout longer than the first SYN retransmit (1 s) a connection into a
	// short gap would otherwise pass, and a short Timeout fails connections
	// on a starved host whose packets were never lost.
	NoRetransmit bool
	// PushEvery (push holds) asks the node to push a line this often
	// instead of every 20 ms: a client that has acknowledged everything is
	// silent between pushes.
	PushEvery time.Duration
	next      *atomic.Uint64
}

// ErrRetransmitted is Once's error for a connection that was answered only
// after a retransmission (Options.NoRetransmit).
var ErrRetransmitted = errors.New("answered only after a retransmission (a SYN or the request was lost)")

// WithSources returns o sending from addrs in turn; copies of the result share the
// turn, so successive Count calls keep cycling through all of addrs.
func (o Options) WithSources(addrs []netip.Addr) Options {
	o.Sources = addrs
	o.next = new(atomic.Uint64)
	return o
}

func (o *Options) source() net.Addr {
	if len(o.Sources) == 0 {
		return nil
	}
	i := 0
	if o.next != nil {
		i = int(o.next.Add(1)-1) % len(o.Sources)
	}
	if o.Proto == "udp" {
		return &net.UDPAddr{IP: o.Sources[i].AsSlice()}
	}
	return &net.TCPAddr{IP: o.Sources[i].AsSlice()}
}

func (o *Options) defaults() {
	if o.Proto == "" {
		o.Proto = "tcp"
	}
	if o.Timeout == 0 {
		o.Timeout = time.Second
	}
	if o.next == nil {
		o.next = new(atomic.Uint64)
	}
}

// Once makes one connection (TCP: connect and read the greeting; UDP: one datagram
// from a fresh socket, so a fresh source port) and returns the node's name.
func Once(o Options) (string, error) {
	name, _, err := once(o)
	return name, err
}

// once is Once that also returns the connection's local address (TCP), even
// when the handshake failed: a failed connection's source port is what finds
// its entries in the edges' IPVS and conntrack tables.
func once(o Options) (name, local string, err error) {
	o.defaults()
	d := net.Dialer{Timeout: o.Timeout, LocalAddr: o.source()}
	if o.Proto == "tcp" {
		// The dialer binds LocalAddr only after Control: bind it here.
		var from *net.TCPAddr
		if a, ok := d.LocalAddr.(*net.TCPAddr); ok {
			from, d.LocalAddr = a, nil
		}
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var berr error
			if err := rc.Control(func(fd uintptr) { local, berr = startConnect(int(fd), from, o.Addr) }); err != nil {
				return err
			}
			return berr
		}
	}
	c, err := d.Dial(o.Proto, o.Addr)
	if err != nil {
		return "", local, err
	}
	name, err = read(c, o)
	return name, local, err
}

// startConnect binds from (if set), starts the non-blocking connect itself
// and returns the local address the kernel bound for it ("" if it could not
// tell). The dialer's own connect then finds it under way (EALREADY) and
// waits for it as usual; an address it cannot parse is left to the dialer.
func startConnect(fd int, from *net.TCPAddr, addr string) (string, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return "", nil
	}
	if from != nil {
		la, _ := netip.AddrFromSlice(from.IP)
		var bsa unix.Sockaddr = &unix.SockaddrInet4{Addr: la.Unmap().As4()}
		if ap.Addr().Is6() {
			bsa = &unix.SockaddrInet6{Addr: la.As16()}
		}
		if err := unix.Bind(fd, bsa); err != nil {
			return "", fmt.Errorf("bind %s: %w", from, err)
		}
	}
	var sa unix.Sockaddr
	if ap.Addr().Is4() {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	} else {
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	if err := unix.Connect(fd, sa); err != nil && err != unix.EINPROGRESS {
		return "", nil // the dialer's connect reports it
	}
	switch la, _ := unix.Getsockname(fd); la := la.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(la.Addr), uint16(la.Port)).String(), nil
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(la.Addr), uint16(la.Port)).String(), nil
	}
	return "", nil
}

// read reads the node's answer on c and closes it.
func read(c net.Conn, o Options) (string, error) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(o.Timeout))
	if o.Proto == "udp" {
		if _, err := c.Write([]byte("?\n")); err != nil {
			return "", err
		}
		buf := make([]byte, 256)
		n, err := c.Read(buf)
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(buf[:n])), nil
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	if o.NoRetransmit {
		if n, err := retransmits(c); err != nil {
			return "", err
		} else if n > 0 {
			return "", fmt.Errorf("%s: %w (%d)", strings.TrimSpace(line), ErrRetransmitted, n)
		}
	}
	return strings.TrimSpace(line), nil
}

// retransmits is the kernel's count of segments c retransmitted (TCP_INFO).
func retransmits(c net.Conn) (uint32, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0, nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var info *unix.TCPInfo
	var gerr error
	if err := raw.Control(func(fd uintptr) { info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		return 0, err
	}
	if gerr != nil {
		return 0, fmt.Errorf("read TCP_INFO: %w", gerr)
	}
	return info.Total_retrans, nil
}

// CountResult is what Count saw.
type CountResult struct {
	Proto     string         `json:"proto"`
	Addr      string         `json:"addr"`
	Sent      int            `json:"sent"`
	OK        int            `json:"ok"`
	Errors    int            `json:"errors"`
	Counts    map[string]int `json:"counts"`                 // node name -> answers
	Samples   []string       `json:"errorSamples,omitempty"` // up to 5 error messages
	Elapsed   time.Duration  `json:"elapsedNs"`
	PerSecond float64        `json:"perSecond"` // successful connections per second
}

// Nodes returns the answering nodes, sorted.
func (r CountResult) Nodes() []string {
	var out []string
	for n := range r.Counts {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (r CountResult) String() string {
	var parts []string
	for _, n := range r.Nodes() {
		parts = append(parts, fmt.Sprintf("%s=%d", n, r.Counts[n]))
	}
	return fmt.Sprintf("%s %s: %d/%d ok (%s) %.0f/s errors=%d %v", r.Proto, r.Addr, r.OK, r.Sent, strings.Join(parts, " "), r.PerSecond, r.Errors, r.Samples)
}

// Count makes n connections (or sends n datagrams) with the given concurrency and
// counts the answering nodes.
func Count(ctx context.Context, o Options, n, concurrency int) (CountResult, error) {
	o.defaults()
	if concurrency < 1 {
		concurrency = 1
	}
	res := CountResult{Proto: o.Proto, Addr: o.Addr, Counts: map[string]int{}}
	jobs := make(chan struct{})
	var mu sync.Mutex
	var wg sync.WaitGroup
	var setupErr error
	start := time.Now()
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := netns.Enter(o.NetNS); err != nil {
				mu.Lock()
				setupErr = err
				mu.Unlock()
				for range jobs {
				}
				return
			}
			for range jobs {
				name, err := Once(o)
				mu.Lock()
				res.Sent++
				if err != nil {
					res.Errors++
					if len(res.Samples) < 5 {
						res.Samples = append(res.Samples, err.Error())
					}
				} else {
					res.OK++
					res.Counts[name]++
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for i := 0; i < n; i++ {
		select {
		case jobs <- struct{}{}:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	res.Elapsed = time.Since(start)
	if s := res.Elapsed.Seconds(); s > 0 {
		res.PerSecond = float64(res.OK) / s
	}
	if setupErr != nil {
		return res, setupErr
	}
	return res, ctx.Err()
}

// Break is one long-lived connection that stopped answering.
type Break struct {
	Conn  int           `json:"conn"`
	Node  string        `json:"node"`
	After time.Duration `json:"afterNs"` // since the hold started
	Err   string        `json:"err"`
}

// HoldResult is what a Hold saw.
type HoldResult struct {
	Addr    string         `json:"addr"`
	Opened  int            `json:"opened"`
	Kept    int            `json:"kept"`
	Broken  []Break        `json:"broken"`
	Pings   int            `json:"pings"`
	Nodes   map[string]int `json:"nodes"` // node name -> connections held to it
	Elapsed time.Duration  `json:"elapsedNs"`
	// Redials are the dials that failed while opening (each retried
	// from a new client port): the set is what matters, but a VIP that
	// left a SYN unanswered for seconds is worth a line in the log.
	Redials []string `json:"redials,omitempty"`
	// LongestWait is the longest a ping waited for its answer on a
	// connection that was kept: a takeover can stall one for seconds
	// (retransmits) without breaking it.
	LongestWait time.Duration `json:"longestWaitNs"`
}

// Hold is a set of long-lived TCP connections, each pinged on an interval.
type Hold struct {
	o        Options
	interval time.Duration
	push     bool
	start    time.Time
	stop     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	res      HoldResult
}

// StartHold opens m TCP connections and pings each every interval (a line; the node
// answers with its name, which must not change) until Stop. Every connection must
// open; a connection that fails a ping, or answers with another name, is broken and
// not pinged again.
func StartHold(o Options, m int, interval time.Duration) (*Hold, error) {
	return startHold(o, m, interval, false)
}

func startHold(o Options, m int, interval time.Duration, push bool) (*Hold, error) {
	o.defaults()
	o.Proto = "tcp"
	h := &Hold{o: o, interval: interval, push: push, stop: make(chan struct{}), start: time.Now()}
	h.res = HoldResult{Addr: o.Addr, Nodes: map[string]int{}}
	conns := make([]net.Conn, 0, m)
	names := make([]string, 0, m)
	err := netns.Do(o.NetNS, func() error {
		// 5 s covers the SYN's retransmits at 1 and 3 s.
		d := net.Dialer{Timeout: min(o.Timeout, 5*time.Second)}
		for i := 0; i < m; i++ {
			var c net.Conn
			var err error
			for try := 1; ; try++ {
				if c, err = d.Dial("tcp", o.Addr); err == nil {
					break
				}
				if try == 3 {
					return fmt.Errorf("hold: connection %d: %w", i, err)
				}
				h.res.Redials = append(h.res.Redials, fmt.Sprintf("connection %d: %v", i, err))
			}
			c.SetReadDeadline(time.Now().Add(o.Timeout))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				c.Close()
				return fmt.Errorf("hold: connection %d greeting: %w", i, err)
			}
			conns = append(conns, c)
			names = append(names, strings.TrimSpace(line))
		}
		return nil
	})
	if err != nil {
		for _, c := range conns {
			c.Close()
		}
		return nil, err
	}
	h.res.Opened = m
	for i, c := range conns {
		h.res.Nodes[names[i]]++
		h.wg.Add(1)
		go h.ping(i, c, names[i], time.Duration(i)*interval/time.Duration(m))
	}
	return h, nil
}

// Redials lists the dials that failed while opening and were retried.
func (h *Hold) Redials() []string { return slices.Clone(h.res.Redials) }

// StartPushHold is StartHold over connections on which the node speaks first:
// each asks its node to stream (a line every 20 ms, unasked) and still pings
// every interval; a connection breaks when a read or write fails, a line names
// another node, or nothing arrives for the timeout.
func StartPushHold(o Options, m int, interval time.Duration) (*Hold, error) {
	return startHold(o, m, interval, true)
}

func (h *Hold) ping(i int, c net.Conn, name string, offset time.Duration) {
	defer h.wg.Done()
	defer c.Close()
	if h.push {
		h.pushed(i, c, name)
		return
	}
	r := bufio.NewReader(c)
	broke := func(err error) {
		h.mu.Lock()
		h.res.Broken = append(h.res.Broken, Break{Conn: i, Node: name, After: time.Since(h.start), Err: err.Error()})
		h.mu.Unlock()
	}
	select {
	case <-time.After(offset):
	case <-h.stop:
		return
	}
	t := time.NewTicker(h.interval)
	defer t.Stop()
	for {
		sent := time.Now()
		c.SetDeadline(sent.Add(h.o.Timeout))
		if _, err := c.Write([]byte("ping\n")); err != nil {
			broke(err)
			return
		}
		if err := h.readName(r, name); err != nil {
			broke(err)
			return
		}
		h.mu.Lock()
		h.res.LongestWait = max(h.res.LongestWait, time.Since(sent))
		h.mu.Unlock()
		select {
		case <-t.C:
		case <-h.stop:
			return
		}
	}
}

// readName reads one line, which must be the node's name, and counts it.
func (h *Hold) readName(r *bufio.Reader, name string) error {
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if got := strings.TrimSpace(line); got != name {
		return fmt.Errorf("answered by %q, was %q", got, name)
	}
	h.mu.Lock()
	h.res.Pings++
	h.mu.Unlock()
	return nil
}

// pushed runs one push connection: a reader checks every line while the
// caller's goroutine pings.
func (h *Hold) pushed(i int, c net.Conn, name string) {
	var once sync.Once
	broke := func(err error) {
		once.Do(func() {
			h.mu.Lock()
			h.res.Broken = append(h.res.Broken, Break{Conn: i, Node: name, After: time.Since(h.start), Err: err.Error()})
			h.mu.Unlock()
		})
	}
	stopped := func() bool {
		select {
		case <-h.stop:
			return true
		default:
			return false
		}
	}
	req := "stream\n"
	if h.o.PushEvery > 0 {
		req = "stream " + h.o.PushEvery.String() + "\n"
	}
	if _, err := c.Write([]byte(req)); err != nil {
		broke(err)
		return
	}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		r := bufio.NewReader(c)
		for {
			c.SetReadDeadline(time.Now().Add(h.o.Timeout))
			if err := h.readName(r, name); err != nil {
				if !stopped() {
					broke(err)
				}
				return
			}
		}
	}()
	t := time.NewTicker(h.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-readerDone:
			return
		case <-h.stop:
			c.Close() // ends the reader
			<-readerDone
			return
		}
		c.SetWriteDeadline(time.Now().Add(h.o.Timeout))
		if _, err := c.Write([]byte("ping\n")); err != nil {
			broke(err)
			c.Close()
			<-readerDone
			return
		}
	}
}

// Stop ends the pinging, closes the connections and reports.
func (h *Hold) Stop() HoldResult {
	close(h.stop)
	h.wg.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.res.Elapsed = time.Since(h.start)
	h.res.Kept = h.res.Opened - len(h.res.Broken)
	sort.Slice(h.res.Broken, func(a, b int) bool { return h.res.Broken[a].Conn < h.res.Broken[b].Conn })
	return h.res
}

// Attempt is one new connection made by a Steady.
type Attempt struct {
	At   time.Duration `json:"atNs"` // start, since the steady started
	Took time.Duration `json:"tookNs"`
	Node string        `json:"node,omitempty"`
	Err  string        `json:"err,omitempty"`
	// Local is a failed TCP attempt's local address (its source port).
	Local string `json:"local,omitempty"`
}

// SteadyResult is what a Steady saw.
type SteadyResult struct {
	Addr     string         `json:"addr"`
	Proto    string         `json:"proto"`
	Rate     float64        `json:"rate"`
	Attempts int            `json:"attempts"`
	OK       int            `json:"ok"`
	Failed   int            `json:"failed"`
	Counts   map[string]int `json:"counts"`
	// Mark is when Mark was called (since the start), and RecoveredAfter the time from
	// the mark to the end of the first successful attempt that started after it; -1
	// without a mark or without such an attempt. FailedAfterMark counts attempts that
	// started after the mark and failed.
	Mark            time.Duration `json:"markNs"`
	RecoveredAfter  time.Duration `json:"recoveredAfterNs"`
	FailedAfterMark int           `json:"failedAfterMark"`
	// LongestOutage is the longest span between the start of a failed attempt and the
	// end of the next successful one.
	LongestOutage time.Duration `json:"longestOutageNs"`
	Timeline      []Attempt     `json:"timeline,omitempty"`
}

// Steady makes new connections at a steady rate until Stop.
type Steady struct {
	o       Options
	start   time.Time
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	mark    time.Duration
	marked  bool
	rate    float64
	attempt []Attempt
}

// StartSteady starts making rate new connections per second (with up to workers in
// flight; default 8).
func StartSteady(o Options, rate float64, workers int) (*Steady, error) {
	o.defaults()
	if rate <= 0 {
		return nil, errors.New("steady: rate must be > 0")
	}
	if workers < 1 {
		workers = 8
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Steady{o: o, start: time.Now(), cancel: cancel, done: make(chan struct{}), rate: rate}
	jobs := make(chan time.Duration)
	var wg sync.WaitGroup
	ready := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := netns.Enter(o.NetNS)
			ready <- err
			if err != nil {
				return
			}
			for at := range jobs {
				t0 := time.Now()
				name, local, err := once(o)
				a := Attempt{At: at, Took: time.Since(t0), Node: name}
				if err != nil {
					a.Err, a.Local = err.Error(), local
				}
				s.mu.Lock()
				s.attempt = append(s.attempt, a)
				s.mu.Unlock()
			}
		}()
	}
	for w := 0; w < workers; w++ {
		if err := <-ready; err != nil {
			cancel()
			close(jobs)
			return nil, err
		}
	}
	go func() {
		defer close(s.done)
		t := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				close(jobs)
				wg.Wait()
				return
			case <-t.C:
				select {
				case jobs <- time.Since(s.start):
				default: // every worker busy: skip this slot, do not queue up
				}
			}
		}
	}()
	return s, nil
}

// Elapsed is the time since the steady started: the clock of its Attempts.
func (s *Steady) Elapsed() time.Duration { return time.Since(s.start) }

// Mark records the event (kill, cut, restart) the recovery time is measured from.
func (s *Steady) Mark() {
	s.mu.Lock()
	s.mark, s.marked = time.Since(s.start), true
	s.mu.Unlock()
}

// Stop ends the traffic and reports; withTimeline keeps every attempt.
func (s *Steady) Stop(withTimeline bool) SteadyResult {
	s.cancel()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	sort.Slice(s.attempt, func(a, b int) bool { return s.attempt[a].At < s.attempt[b].At })
	r := SteadyResult{Addr: s.o.Addr, Proto: s.o.Proto, Rate: s.rate, Counts: map[string]int{}, RecoveredAfter: -1}
	if s.marked {
		r.Mark = s.mark
	}
	var outageStart time.Duration = -1
	for _, a := range s.attempt {
		r.Attempts++
		if a.Err != "" {
			r.Failed++
			if s.marked && a.At >= s.mark {
				r.FailedAfterMark++
			}
			if outageStart < 0 {
				outageStart = a.At
			}
			continue
		}
		r.OK++
		r.Counts[a.Node]++
		end := a.At + a.Took
		if outageStart >= 0 {
			if d := end - outageStart; d > r.LongestOutage {
				r.LongestOutage = d
			}
			outageStart = -1
		}
		if s.marked && a.At >= s.mark && (r.RecoveredAfter < 0 || end-s.mark < r.RecoveredAfter) {
			r.RecoveredAfter = end - s.mark
		}
	}
	if withTimeline {
		r.Timeline = append([]Attempt{}, s.attempt...)
	}
	return r
}
