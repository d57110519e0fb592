package health

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

type recorder struct {
	mu  sync.Mutex
	got map[Key][]State
	ch  chan struct{}
}

func newRecorder() *recorder { return &recorder{got: map[Key][]State{}, ch: make(chan struct{}, 1000)} }

func (r *recorder) on(k Key, s Status) {
	r.mu.Lock()
	r.got[k] = append(r.got[k], s.State)
	r.mu.Unlock()
	r.ch <- struct{}{}
}

func (r *recorder) states(k Key) []State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]State(nil), r.got[k]...)
}

func waitState(t *testing.T, c *Checker, k Key, want State) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if st, _ := c.Status(k); st.State == want {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	st, _ := c.Status(k)
	t.Fatalf("%s: state %s (last error %q), want %s", k, st.State, st.LastError, want)
}

func start(t *testing.T, opts Options) *Checker {
	c := New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	go c.Run(ctx)
	t.Cleanup(cancel)
	return c
}

func fast(typ Type) Spec {
	return Spec{Type: typ, Path: "/healthz", Codes: DefaultCodes, Interval: 20 * time.Millisecond, Timeout: 15 * time.Millisecond, Rise: 2, Fall: 3}
}

func keyOf(t *testing.T, addr string, s Spec) Key {
	ap := netip.MustParseAddrPort(addr)
	return Key{Addr: ap.Addr(), Port: ap.Port(), Spec: s}
}

func TestTCPDownAndUp(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	rec := newRecorder()
	c := start(t, Options{OnTransition: rec.on})
	k := keyOf(t, addr, fast(TCP))
	c.SetTargets([]Key{k})
	waitState(t, c, k, Healthy)
	l.Close() // the node stops serving
	waitState(t, c, k, Unhealthy)
	l2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port reuse: %v", err)
	}
	defer l2.Close()
	go func() {
		for {
			c, err := l2.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	waitState(t, c, k, Healthy)
	if got := rec.states(k); fmt.Sprint(got) != "[healthy unhealthy healthy]" {
		t.Errorf("transitions %v", got)
	}
	if st, _ := c.Status(k); st.LastError != "" || st.LastTransition.IsZero() {
		t.Errorf("status after recovery: %+v", st)
	}
}

// kube-proxy's healthCheckNodePort answers 200 where the node has a ready
// local endpoint and 503 elsewhere; the check follows it.
func TestHTTPFollowsHealthz(t *testing.T) {
	var code atomic.Int32
	code.Store(200)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			w.WriteHeader(404)
			return
		}
		w.WriteHeader(int(code.Load()))
	}))
	defer srv.Close()
	c := start(t, Options{})
	k := keyOf(t, srv.Listener.Addr().String(), fast(HTTP))
	c.SetTargets([]Key{k})
	waitState(t, c, k, Healthy)
	code.Store(503)
	waitState(t, c, k, Unhealthy)
	if st, _ := c.Status(k); st.LastError != "HTTP 503 (expected 200-399)" {
		t.Errorf("last error %q", st.LastError)
	}
	code.Store(200)
	waitState(t, c, k, Healthy)
}

func TestHTTPSWithoutVerification(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	c := start(t, Options{})
	k := keyOf(t, srv.Listener.Addr().String(), fast(HTTPS))
	c.SetTargets([]Key{k})
	waitState(t, c, k, Healthy)
}

func TestHungServerTimesOut(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	defer srv.Close()
	defer close(block)
	c := start(t, Options{})
	k := keyOf(t, srv.Listener.Addr().String(), fast(HTTP))
	c.SetTargets([]Key{k})
	waitState(t, c, k, Unhealthy)
}

// A backend that fails every other probe never reaches fall consecutive
// failures: rise/fall damp the flapping instead of flipping traffic around.
func TestFlappingIsDamped(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%2 == 0 {
			w.WriteHeader(500)
		}
	}))
	defer srv.Close()
	rec := newRecorder()
	c := start(t, Options{OnTransition: rec.on})
	k := keyOf(t, srv.Listener.Addr().String(), fast(HTTP))
	c.SetTargets([]Key{k})
	time.Sleep(400 * time.Millisecond) // ~20 probes
	if got := rec.states(k); fmt.Sprint(got) != "[healthy]" {
		t.Errorf("flapping backend transitions %v; want only [healthy]", got)
	}
}

func TestSetTargetsKeepsState(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }))
	defer srv.Close()
	c := start(t, Options{})
	k := keyOf(t, srv.Listener.Addr().String(), fast(HTTP))
	c.SetTargets([]Key{k})
	waitState(t, c, k, Unhealthy)
	other := keyOf(t, "127.0.0.1:1", fast(TCP))
	c.SetTargets([]Key{k, other})
	if st, _ := c.Status(k); st.State != Unhealthy {
		t.Errorf("state lost on SetTargets: %v", st.State)
	}
	c.SetTargets([]Key{other})
	if _, ok := c.Status(k); ok {
		t.Error("removed target still present")
	}
}

func TestTargetsFromServices(t *testing.T) {
	vs := &edgelbv1.VirtualService{Tenant: "t", Name: "a", Vip: "192.0.2.1",
		Ports:    []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_UDP, Port: 53, BackendPort: 30053}, {Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80, BackendPort: 30080}},
		Backends: []*edgelbv1.Backend{{Address: "10.0.0.1"}, {Address: "10.0.0.2", Port: 31000}}}
	local := &edgelbv1.VirtualService{Tenant: "t", Name: "b", Vip: "192.0.2.2",
		Ports:       []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80, BackendPort: 30081}},
		Backends:    []*edgelbv1.Backend{{Address: "10.0.0.1"}},
		HealthCheck: &edgelbv1.HealthCheck{Type: edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP, Port: 32000, Path: "/healthz", Interval: durationpb.New(2 * time.Second)}}
	none := &edgelbv1.VirtualService{Tenant: "t", Name: "c", Vip: "192.0.2.3", Ports: vs.Ports, Backends: vs.Backends,
		HealthCheck: &edgelbv1.HealthCheck{Type: edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_NONE}}
	got := Targets([]*edgelbv1.VirtualService{vs, local, none})
	var names []string
	for k, refs := range got {
		names = append(names, fmt.Sprintf("%s %s/%s %v %v", k, refs[0].Tenant, refs[0].Name, k.Spec.Interval, k.Spec.Path))
	}
	sort.Strings(names)
	want := []string{
		"http://10.0.0.1:32000 t/b 2s /healthz",
		"tcp://10.0.0.1:30080 t/a 1s ",
		"tcp://10.0.0.2:31000 t/a 1s ",
	}
	if fmt.Sprint(names) != fmt.Sprint(want) {
		t.Errorf("targets\n%v\nwant\n%v", names, want)
	}
}

// SCTP-only services are checked with an SCTP association of their first
// SCTP port (a TCP connect there proves nothing); an explicit sctp check
// takes its port; a service with a TCP port keeps the TCP connect.
func TestTargetsSCTP(t *testing.T) {
	sctp := func(port, backend uint32) *edgelbv1.Port {
		return &edgelbv1.Port{Protocol: edgelbv1.Protocol_PROTOCOL_SCTP, Port: port, BackendPort: backend}
	}
	only := &edgelbv1.VirtualService{Tenant: "t", Name: "only", Vip: "192.0.2.1",
		Ports:    []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_UDP, Port: 53, BackendPort: 30053}, sctp(3868, 30868), sctp(2905, 30905)},
		Backends: []*edgelbv1.Backend{{Address: "10.0.0.1"}}}
	dr := &edgelbv1.VirtualService{Tenant: "t", Name: "dr", Vip: "192.0.2.2", ForwardingMode: edgelbv1.ForwardingMode_FORWARDING_MODE_DR,
		Ports: []*edgelbv1.Port{sctp(3868, 3868)}, Backends: []*edgelbv1.Backend{{Address: "10.0.0.2"}}}
	explicit := &edgelbv1.VirtualService{Tenant: "t", Name: "explicit", Vip: "192.0.2.3",
		Ports: []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80, BackendPort: 30080}, sctp(3868, 30869)}, Backends: []*edgelbv1.Backend{{Address: "10.0.0.3"}},
		HealthCheck: &edgelbv1.HealthCheck{Type: edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_SCTP}}
	mixed := &edgelbv1.VirtualService{Tenant: "t", Name: "mixed", Vip: "192.0.2.4",
		Ports: []*edgelbv1.Port{sctp(3868, 30870), {Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80, BackendPort: 30081}}, Backends: []*edgelbv1.Backend{{Address: "10.0.0.4"}}}
	var names []string
	for k := range Targets([]*edgelbv1.VirtualService{only, dr, explicit, mixed}) {
		names = append(names, k.String())
	}
	sort.Strings(names)
	want := []string{"sctp://10.0.0.1:30868", "sctp://10.0.0.2:3868", "sctp://10.0.0.3:30869", "tcp://10.0.0.4:30081"}
	if fmt.Sprint(names) != fmt.Sprint(want) {
		t.Errorf("targets %v, want %v", names, want)
	}
	if s, _ := SpecFromProto(explicit.HealthCheck); s.Type != SCTP || s.Path != "" || s.Codes != "" {
		t.Errorf("sctp spec %+v: want type sctp, no HTTP fields", s)
	}
}

// The SCTP probe against a port nothing listens on, where the kernel has
// SCTP: the peer's ABORT fails it at once (not a timeout). Where the kernel
// has no SCTP the probe says so. Either way it fails: no backend is called
// healthy without an association.
func TestSCTPProbeFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := sctpAssociate(ctx, netip.MustParseAddrPort("127.0.0.1:9"))
	if err == nil {
		t.Fatal("an association with a closed port succeeded")
	}
	t.Logf("closed port: %v", err)
}

func FuzzSpecFromProto(f *testing.F) {
	f.Add(int32(2), uint32(0), "/healthz", int64(1e9), int64(5e8), uint32(2), uint32(3), uint32(200))
	f.Add(int32(1), uint32(80), "", int64(0), int64(0), uint32(0), uint32(0), uint32(0))
	f.Fuzz(func(t *testing.T, typ int32, port uint32, path string, interval, timeout int64, rise, fall, code uint32) {
		hc := &edgelbv1.HealthCheck{Type: edgelbv1.HealthCheckType(typ), Port: port, Path: path,
			Interval: durationpb.New(time.Duration(interval)), Timeout: durationpb.New(time.Duration(timeout)), Rise: rise, Fall: fall}
		if code != 0 {
			hc.ExpectedCodes = []uint32{code}
		}
		s, ok := SpecFromProto(hc)
		if !ok {
			return
		}
		if s.Rise < 1 || s.Fall < 1 || s.Interval <= 0 || s.Timeout <= 0 {
			t.Fatalf("spec without usable defaults: %+v", s)
		}
		_ = codeOK(s.Codes, 200)
	})
}

// BenchmarkChecks10kBackends: how many TCP checks per second one process
// sustains with 10,000 targets (127.0.x.y on one loopback listener), each
// probed every 50 ms so the checker, not the interval, is the limit.
func BenchmarkChecks10kBackends(b *testing.B) {
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	spec := Spec{Type: TCP, Interval: 50 * time.Millisecond, Timeout: 40 * time.Millisecond, Rise: 2, Fall: 3}
	keys := make([]Key, 10000)
	for i := range keys {
		keys[i] = Key{Addr: netip.AddrFrom4([4]byte{127, 0, byte(1 + i/250), byte(1 + i%250)}), Port: port, Spec: spec}
	}
	for i := 0; i < b.N; i++ {
		c := New(Options{})
		ctx, cancel := context.WithCancel(context.Background())
		go c.Run(ctx)
		c.SetTargets(keys)
		time.Sleep(500 * time.Millisecond) // warm up
		n0, f0 := c.Counts()
		t0 := time.Now()
		time.Sleep(2 * time.Second)
		n1, f1 := c.Counts()
		el := time.Since(t0).Seconds()
		cancel()
		b.ReportMetric(float64(n1-n0)/el, "checks/s")
		b.ReportMetric(float64(f1-f0), "failed")
	}
}

// BenchmarkDetection: from a backend going down (its listener closed) to the
// transition callback, with interval 100 ms and fall 3 (so ≥200 ms by design).
func BenchmarkDetection(b *testing.B) {
	var lat []time.Duration
	for i := 0; i < b.N; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		down := make(chan time.Time, 4)
		c := New(Options{OnTransition: func(k Key, s Status) {
			if s.State == Unhealthy {
				down <- time.Now()
			}
		}})
		ctx, cancel := context.WithCancel(context.Background())
		go c.Run(ctx)
		ap := netip.MustParseAddrPort(l.Addr().String())
		k := Key{Addr: ap.Addr(), Port: ap.Port(), Spec: Spec{Type: TCP, Interval: 100 * time.Millisecond, Timeout: 80 * time.Millisecond, Rise: 2, Fall: 3}}
		c.SetTargets([]Key{k})
		for st, _ := c.Status(k); st.State != Healthy; st, _ = c.Status(k) {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(i%10) * 10 * time.Millisecond) // vary the phase
		t0 := time.Now()
		l.Close()
		lat = append(lat, (<-down).Sub(t0))
		cancel()
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Milliseconds()), "p99-ms")
}
