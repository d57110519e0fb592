package health

import (
	"container/heap"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// State of a backend.
type State uint8

const (
	Unknown State = iota
	Healthy
	Unhealthy
)

func (s State) String() string { return [...]string{"unknown", "healthy", "unhealthy"}[s] }

// Status is a check's current view.
type Status struct {
	State          State
	LastError      string
	LastCheck      time.Time
	LastTransition time.Time
	LastLatency    time.Duration
}

// Options configure a Checker.
type Options struct {
	// OnTransition is called (from the scheduler goroutine; keep it short) when
	// a check's state changes.
	OnTransition func(Key, Status)
	// OnProbe, when set, is called for every probe result (metrics).
	OnProbe func(k Key, ok bool, latency time.Duration)
	// MaxInFlight bounds concurrent probes (default 512).
	MaxInFlight int
	Logger      *slog.Logger
	// DialContext opens every probe's connection (default net.Dialer). Tests
	// set it to keep their probes on loopback, since the API refuses
	// loopback backends.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

type target struct {
	key        Key
	st         Status
	ok, bad    int // consecutive successes / failures
	next       time.Time
	idx        int // heap index, -1 when not queued
	inFlight   bool
	removed    bool
	generation uint64
}

type result struct {
	t       *target
	err     error
	latency time.Duration
	at      time.Time
}

// Checker runs checks.
type Checker struct {
	opts    Options
	mu      sync.Mutex
	targets map[Key]*target
	queue   timerHeap
	wake    chan struct{}
	results chan result
	sem     chan struct{}
	client  *http.Client
	tlsCli  *http.Client

	checks, failures uint64
}

// New returns a Checker; call Run.
func New(opts Options) *Checker {
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 512
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.OnTransition == nil {
		opts.OnTransition = func(Key, Status) {}
	}
	if opts.DialContext == nil {
		opts.DialContext = (&net.Dialer{}).DialContext
	}
	// Health probes must see the backend as a new client would: no connection
	// reuse (a kept-alive connection hides a node that stopped accepting), no
	// redirects followed, no proxies.
	tr := func(insecure bool) *http.Client {
		return &http.Client{
			Transport: &http.Transport{
				DisableKeepAlives: true, Proxy: nil, DialContext: opts.DialContext,
				TLSClientConfig: &tls.Config{InsecureSkipVerify: insecure}, //nolint:gosec // health checks of NodePorts carry no certificate
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return &Checker{opts: opts, targets: map[Key]*target{}, wake: make(chan struct{}, 1),
		results: make(chan result, opts.MaxInFlight), sem: make(chan struct{}, opts.MaxInFlight),
		client: tr(false), tlsCli: tr(true)}
}

// jitter spreads the first probe of each target over its interval, by a hash
// of its key so the spread is stable across restarts.
func jitter(k Key) time.Duration {
	h := fnv.New64a()
	fmt.Fprint(h, k.Addr, k.Port, k.Spec)
	return time.Duration(h.Sum64() % uint64(k.Spec.Interval))
}

// SetTargets replaces the set of checks. Unchanged checks keep their state
// and schedule; new ones start Unknown with their first probe within one
// interval (jittered); removed ones stop.
func (c *Checker) SetTargets(keys []Key) { c.SetTargetsFrom(keys, nil) }

// SetTargetsFrom is SetTargets where a new check may start from a known state
// (a new owner after failover starts from the health its predecessor
// published, so a backend known to be down needs rise successes to return).
func (c *Checker) SetTargetsFrom(keys []Key, initial func(Key) State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	want := make(map[Key]bool, len(keys))
	now := time.Now()
	for _, k := range keys {
		want[k] = true
		if _, ok := c.targets[k]; ok {
			continue
		}
		t := &target{key: k, idx: -1, next: now.Add(jitter(k) / 4)}
		if initial != nil {
			t.st.State = initial(k)
		}
		c.targets[k] = t
		heap.Push(&c.queue, t)
	}
	for k, t := range c.targets {
		if !want[k] {
			t.removed = true
			if t.idx >= 0 {
				heap.Remove(&c.queue, t.idx)
			}
			delete(c.targets, k)
		}
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Status returns a check's current status.
func (c *Checker) Status(k Key) (Status, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.targets[k]
	if !ok {
		return Status{}, false
	}
	return t.st, true
}

// Counts returns probes run and failed.
func (c *Checker) Counts() (checks, failures uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checks, c.failures
}

// Run schedules probes until ctx ends.
func (c *Checker) Run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		c.mu.Lock()
		now := time.Now()
		var due []*target
		for c.queue.Len() > 0 && !c.queue[0].next.After(now) {
			t := heap.Pop(&c.queue).(*target)
			t.inFlight = true
			due = append(due, t)
		}
		wait := time.Hour
		if c.queue.Len() > 0 {
			wait = time.Until(c.queue[0].next)
		}
		c.mu.Unlock()
		for _, t := range due {
			// Wait for a free probe slot, recording finished probes meanwhile:
			// they hold their slot until their result is taken.
			for started := false; !started; {
				select {
				case c.sem <- struct{}{}:
					go c.probe(ctx, t)
					started = true
				case r := <-c.results:
					c.record(r)
				case <-ctx.Done():
					return
				}
			}
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		case r := <-c.results:
			c.record(r)
			for drained := false; !drained; {
				select {
				case r := <-c.results:
					c.record(r)
				default:
					drained = true
				}
			}
		case <-timer.C:
		}
	}
}

func (c *Checker) probe(ctx context.Context, t *target) {
	k := t.key
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, k.Spec.Timeout)
	err := c.do(pctx, k)
	cancel()
	select {
	case c.results <- result{t: t, err: err, latency: time.Since(start), at: time.Now()}:
	case <-ctx.Done():
	}
	<-c.sem
}

func (c *Checker) do(ctx context.Context, k Key) error {
	addr := netip.AddrPortFrom(k.Addr, k.Port).String()
	if k.Spec.Type == SCTP {
		return sctpAssociate(ctx, netip.AddrPortFrom(k.Addr, k.Port))
	}
	if k.Spec.Type == TCP {
		conn, err := c.opts.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return conn.Close()
	}
	scheme, cli := "http", c.client
	if k.Spec.Type == HTTPS {
		scheme, cli = "https", c.tlsCli
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+addr+k.Spec.Path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "edgelb-health/1")
	resp, err := cli.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if !codeOK(k.Spec.Codes, resp.StatusCode) {
		return errors.New("HTTP " + strconv.Itoa(resp.StatusCode) + " (expected " + k.Spec.Codes + ")")
	}
	return nil
}

// record applies one result: rise/fall hysteresis, transition callback, and
// the next probe one interval after this one started.
func (c *Checker) record(r result) {
	c.mu.Lock()
	t := r.t
	t.inFlight = false
	c.checks++
	if t.removed {
		c.mu.Unlock()
		return
	}
	t.st.LastCheck, t.st.LastLatency = r.at, r.latency
	prev := t.st.State
	if r.err != nil {
		c.failures++
		t.bad++
		t.ok = 0
		t.st.LastError = r.err.Error()
		if t.bad >= t.key.Spec.Fall && prev != Unhealthy {
			t.st.State = Unhealthy
		}
	} else {
		t.ok++
		t.bad = 0
		// From Unknown one success decides: traffic already flows to unknown
		// backends, so this only makes it visible.
		if prev == Unhealthy && t.ok >= t.key.Spec.Rise || prev == Unknown {
			t.st.State = Healthy
			t.st.LastError = ""
		}
	}
	changed := t.st.State != prev
	if changed {
		t.st.LastTransition = r.at
	}
	st := t.st
	t.next = r.at.Add(t.key.Spec.Interval - r.latency)
	heap.Push(&c.queue, t)
	c.mu.Unlock()
	if c.opts.OnProbe != nil {
		c.opts.OnProbe(t.key, r.err == nil, r.latency)
	}
	if changed {
		c.opts.OnTransition(t.key, st)
	}
}

type timerHeap []*target

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *timerHeap) Push(x any) {
	t := x.(*target)
	t.idx = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	t.idx = -1
	*h = old[:len(old)-1]
	return t
}
