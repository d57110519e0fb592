package linearizability

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

var lbdBin string

func enabled() bool { return os.Getenv("EDGELB_LINEAR") == "1" }

func TestMain(m *testing.M) {
	flag.Parse()
	code := func() int {
		if !enabled() || testing.Short() {
			return m.Run()
		}
		dir, err := os.MkdirTemp("", "edgelb-linear-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, "temp dir:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/edgelb/edgelb/lbd")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build lbd:", err)
			return 1
		}
		lbdBin = filepath.Join(dir, "lbd")
		return m.Run()
	}()
	os.Exit(code)
}

// params of one run, from the environment.
type params struct {
	ops, clients, keys, minFaults, runs int
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// TestLinearizability drives three real lbd processes with concurrent clients
// while a fault injector SIGKILLs, SIGSTOPs/SIGCONTs and restarts members,
// then checks the recorded history with porcupine and checks that the final
// state holds every acknowledged write that nothing could have overwritten.
//
//	EDGELB_LINEAR=1                 run it (scripts/test.sh does)
//	EDGELB_LINEAR_OPS=1000          operations per run (at least; the run also lasts until EDGELB_LINEAR_FAULTS faults)
//	EDGELB_LINEAR_CLIENTS=8         concurrent clients
//	EDGELB_LINEAR_KEYS=8            services the clients share
//	EDGELB_LINEAR_FAULTS=3          faults per run, at least
//	EDGELB_LINEAR_RUNS=1            runs, each on a fresh cluster (make bench: 10)
//
// Each run prints BENCH-JSON lines (operations checked, violations, faults)
// that integration/cmd/bench turns into its rows.
func TestLinearizability(t *testing.T) {
	if !enabled() || testing.Short() {
		t.Skip("starts three lbd processes and injects faults for about a minute; set EDGELB_LINEAR=1 (make test does)")
	}
	p := params{
		ops:       envInt(t, "EDGELB_LINEAR_OPS", 1000),
		clients:   envInt(t, "EDGELB_LINEAR_CLIENTS", 8),
		keys:      envInt(t, "EDGELB_LINEAR_KEYS", 8),
		minFaults: envInt(t, "EDGELB_LINEAR_FAULTS", 3),
		runs:      envInt(t, "EDGELB_LINEAR_RUNS", 1),
	}
	for r := 1; r <= p.runs; r++ {
		t.Run(fmt.Sprintf("run%d", r), func(t *testing.T) { runOnce(t, p, r) })
	}
}

// record is the history of one run.
type record struct {
	mu  sync.Mutex
	t0  time.Time
	ops []porcupine.Operation
}

func (r *record) now() int64 { return int64(time.Since(r.t0)) }

func (r *record) add(op porcupine.Operation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, op)
}

// counts is what one run did.
type counts struct {
	ops, unknown, faults, violations, lostChecked atomic.Int64
	byFault                                       sync.Map // fault name → *atomic.Int64

	mu     sync.Mutex
	marked []porcupine.Annotation // the faults, for the visualization
}

// mark records a fault on member from start to end (history times).
func (c *counts) mark(member, what string, start, end int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.marked = append(c.marked, porcupine.Annotation{Tag: member, Start: start, End: end, Description: what, BackgroundColor: "#f6c6c6"})
}

func (c *counts) fault(name string) {
	c.faults.Add(1)
	v, _ := c.byFault.LoadOrStore(name, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

const lbdYAML = "raft:\n  snapshotThreshold: 64\n  snapshotInterval: 300ms\nownership:\n  lease: 1s\n  grace: 1200ms\n"

func runOnce(t *testing.T, p params, run int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ms := newCluster(t, lbdBin, 3, lbdYAML)
	until(ctx, t, 60*time.Second, "three voters registered", func(ctx context.Context) error {
		n, err := voters(ctx, ms[0])
		if err == nil && n != 3 {
			err = fmt.Errorf("%d voters", n)
		}
		return err
	})
	pools := edgelbv1.NewAddressPoolServiceClient(ms[0].conn)
	until(ctx, t, 30*time.Second, "address pool created", func(ctx context.Context) error {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		_, err := pools.CreateAddressPool(cctx, &edgelbv1.CreateAddressPoolRequest{Pool: &edgelbv1.AddressPool{Name: "p", Ranges: []string{"10.99.0.0/20"}}})
		if status.Code(err) == codes.AlreadyExists {
			return nil
		}
		return err
	})

	rec := &record{t0: time.Now()}
	var c counts
	keys := make([]string, p.keys)
	for i := range keys {
		keys[i] = fmt.Sprintf("svc%d", i)
	}

	// The clients run until they made p.ops calls and the injector p.minFaults faults.
	load, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var wg sync.WaitGroup
	for i := 0; i < p.clients; i++ {
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			cl := &client{id: id, ms: ms, keys: keys, rec: rec, c: &c, rnd: rand.New(rand.NewPCG(uint64(id), uint64(time.Now().UnixNano()))), seen: map[string]uint64{}}
			for load.Err() == nil {
				if err := cl.call(load); err != nil {
					t.Error(err)
					return
				}
				// A short pause spreads the calls over the faults.
				select {
				case <-load.Done():
				case <-time.After(time.Duration(cl.rnd.IntN(40)) * time.Millisecond):
				}
			}
		}(i)
	}
	faultsDone := make(chan error, 1)
	faultCtx, stopFaults := context.WithCancel(ctx)
	defer stopFaults()
	go func() { faultsDone <- injectFaults(faultCtx, ms, &c, rec) }()
	// Stop once both counts are reached.
	for c.ops.Load() < int64(p.ops) || c.faults.Load() < int64(p.minFaults) {
		select {
		case <-ctx.Done():
			t.Fatalf("run did not reach %d calls and %d faults: %d calls, %d faults", p.ops, p.minFaults, c.ops.Load(), c.faults.Load())
		case err := <-faultsDone:
			t.Fatalf("fault injector: %v\n%s", err, logTails(ms))
		case <-time.After(50 * time.Millisecond):
		}
	}
	stopFaults()
	if err := <-faultsDone; err != nil {
		t.Fatalf("fault injector: %v\n%s", err, logTails(ms))
	}
	stopLoad()
	wg.Wait()

	// Every member is up again; they agree on a leader and a revision.
	until(ctx, t, 60*time.Second, "the cluster settles after the faults", func(ctx context.Context) error { return settled(ctx, ms) })

	// One last acknowledged write per service, then all three members are
	// SIGKILLed at once and restarted: the final state must hold every one.
	sealer := &client{id: p.clients, ms: ms, keys: keys, rec: rec, c: &c, rnd: rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano()))), seen: map[string]uint64{}}
	sealed := map[string]Output{}
	for _, k := range keys {
		until(ctx, t, 60*time.Second, "a last acknowledged write to "+k, func(ctx context.Context) error {
			out, err := sealer.seal(ctx, k)
			if err == nil {
				sealed[k] = out
			}
			return err
		})
	}
	killed := rec.now()
	for _, m := range ms {
		m.kill()
	}
	c.fault("sigkill-all")
	for _, m := range ms {
		if err := m.start(lbdBin); err != nil {
			t.Fatal(err)
		}
	}
	until(ctx, t, 60*time.Second, "the cluster settles after SIGKILL of every member", func(ctx context.Context) error { return settled(ctx, ms) })
	for _, m := range ms {
		c.mark(m.id, "sigkill-all until settled", killed, rec.now())
	}

	// The final state, read through every member: they must agree, and the
	// reads go into the history, so that porcupine also checks them.
	final := map[string]Output{}
	for _, k := range keys {
		for _, m := range ms {
			var out Output
			until(ctx, t, 30*time.Second, "final read of "+k+" through "+m.id, func(ctx context.Context) error {
				call := rec.now()
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				r, err := m.vs.GetVirtualService(cctx, &edgelbv1.GetVirtualServiceRequest{Name: k})
				cancel()
				o, known, err := outcome(Get, r.GetService(), err)
				if err != nil {
					t.Fatalf("final read of %s through %s: %v", k, m.id, err)
				}
				if !known {
					return fmt.Errorf("no answer")
				}
				out = o
				rec.add(porcupine.Operation{ClientId: p.clients, Input: Input{Kind: Get, Key: k}, Call: call, Output: out, Return: rec.now(), Metadata: m.id})
				return nil
			})
			if prev, ok := final[k]; ok && prev != out {
				t.Errorf("members disagree on %s after settling: %+v and %+v (%s)", k, prev, out, m.id)
			}
			final[k] = out
		}
		c.lostChecked.Add(1)
		if want := sealed[k]; final[k] != want {
			c.violations.Add(1)
			t.Errorf("acknowledged write lost: %s was acknowledged as %s before every member was SIGKILLed; after the restart it is %s",
				k, Model.DescribeOperation(Input{Kind: Get, Key: k}, want), Model.DescribeOperation(Input{Kind: Get, Key: k}, final[k]))
		}
	}

	res, info := porcupine.CheckOperationsVerbose(Model, rec.ops, 2*time.Minute)
	switch res {
	case porcupine.Illegal:
		c.violations.Add(1)
		info.AddAnnotations(c.marked)
		path, text := visualize(t, info), dumpHistory(t, rec.ops)
		// Which services: each checked alone, briefly (an illegal history
		// can take the checker long to refute).
		var bad []string
		for _, part := range Model.Partition(rec.ops) {
			if porcupine.CheckOperationsTimeout(Model, part, 10*time.Second) == porcupine.Illegal {
				bad = append(bad, part[0].Input.(Input).Key)
			}
		}
		t.Errorf("the history of %d calls is not linearizable (services %v); porcupine's visualization: %s; the history as text: %s", len(rec.ops), bad, path, text)
	case porcupine.Unknown:
		t.Errorf("porcupine did not finish checking %d calls within 2 minutes", len(rec.ops))
	}

	var faults []string
	c.byFault.Range(func(k, v any) bool {
		faults = append(faults, fmt.Sprintf("%s %d", k, v.(*atomic.Int64).Load()))
		return true
	})
	slices.Sort(faults)
	t.Logf("%d calls checked (%d of unknown outcome, recorded as possibly applied), %d faults injected (%v), %d final writes checked against the final state, %d violations",
		len(rec.ops), c.unknown.Load(), c.faults.Load(), faults, c.lostChecked.Load(), c.violations.Load())
	for name, v := range map[string]int64{"linearizability-ops": int64(len(rec.ops)), "linearizability-violations": c.violations.Load(), "linearizability-faults": c.faults.Load()} {
		// run keeps the runs' lines apart (the bench tool counts a repeated line once).
		b, _ := json.Marshal(map[string]any{"name": name, "value": v, "run": run})
		fmt.Printf("BENCH-JSON %s\n", b)
	}
}

// visualize writes porcupine's HTML for a failed check under .cache/linearizability
// in the repository (kept after the test, unlike its temp dir).
func visualize(t *testing.T, info porcupine.LinearizationInfo) string {
	dir, err := filepath.Abs(filepath.Join("..", "..", ".cache", "linearizability"))
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		t.Logf("no directory for the visualization: %v", err)
		return "(not written)"
	}
	path := filepath.Join(dir, fmt.Sprintf("%s-%s.html", filepath.Base(t.Name()), time.Now().UTC().Format("20060102T150405")))
	if err := porcupine.VisualizePath(Model, info, path); err != nil {
		t.Logf("write visualization: %v", err)
		return "(not written)"
	}
	return path
}

// dumpHistory writes the history as text, one call a line in the order of
// their invocation, next to the visualization.
func dumpHistory(t *testing.T, ops []porcupine.Operation) string {
	dir, _ := filepath.Abs(filepath.Join("..", "..", ".cache", "linearizability"))
	path := filepath.Join(dir, fmt.Sprintf("%s-%s.txt", filepath.Base(t.Name()), time.Now().UTC().Format("20060102T150405")))
	ops = slices.Clone(ops)
	slices.SortFunc(ops, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
	var b strings.Builder
	for _, op := range ops {
		ret := "∞"
		if op.Return != math.MaxInt64 {
			ret = strconv.FormatFloat(float64(op.Return)/1e6, 'f', 1, 64)
		}
		fmt.Fprintf(&b, "%10.1f ms %8s ms  client %d via %v  %s\n", float64(op.Call)/1e6, ret, op.ClientId, op.Metadata, Model.DescribeOperation(op.Input, op.Output))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Logf("write history: %v", err)
		return "(not written)"
	}
	return path
}

// client makes calls of random kinds on random services through random members.
type client struct {
	id   int
	ms   []*member
	keys []string
	rec  *record
	c    *counts
	rnd  *rand.Rand
	seen map[string]uint64 // the last generation this client saw per service (seal: 0 when absent)
}

func (cl *client) call(ctx context.Context) error {
	key := cl.keys[cl.rnd.IntN(len(cl.keys))]
	m := cl.ms[cl.rnd.IntN(len(cl.ms))]
	in := Input{Key: key}
	switch w := cl.rnd.IntN(100); {
	case w < 30:
		in.Kind = Get
	case w < 45:
		in.Kind = Create
		in.Backends = Backends(cl.rnd.IntN(1 << NumBackends))
	case w < 60:
		in.Kind = Update
		in.Backends = Backends(cl.rnd.IntN(1 << NumBackends))
		in.Gen = max(cl.seen[key], 1)
	case w < 70:
		in.Kind = Delete
		if cl.rnd.IntN(2) == 0 {
			in.Gen = cl.seen[key]
		}
	case w < 85:
		in.Kind = AddBackend
		in.Backend = cl.rnd.IntN(NumBackends)
	default:
		in.Kind = RemoveBackend
		in.Backend = cl.rnd.IntN(NumBackends)
	}
	// Longer than an election, shorter than the run.
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	call := cl.rec.now()
	vs, err := invoke(cctx, m.vs, in)
	ret := cl.rec.now()
	if ctx.Err() != nil && err != nil {
		// The run ended under this call. A write may still have been applied.
		if in.Kind != Get {
			cl.record(m.id, in, call, math.MaxInt64, Output{Unknown: true})
		}
		return nil
	}
	out, known, err := outcome(in.Kind, vs, err)
	if err != nil {
		return fmt.Errorf("client %d: %s %s via %s: %w", cl.id, in.Kind, key, m.id, err)
	}
	if !known {
		if in.Kind == Get {
			return nil // a read that did not answer has no effect
		}
		cl.c.unknown.Add(1)
		cl.record(m.id, in, call, math.MaxInt64, Output{Unknown: true})
		return nil
	}
	if out.Code == codes.OK {
		cl.seen[key] = out.Gen
	}
	cl.record(m.id, in, call, ret, out)
	return nil
}

// seal makes one acknowledged write to key: an unconditional update, or a
// create when the service is gone. A call of unknown outcome is recorded and
// answered with an error, so that the caller tries again.
func (cl *client) seal(ctx context.Context, key string) (Output, error) {
	m := cl.ms[cl.rnd.IntN(len(cl.ms))]
	in := Input{Kind: Update, Key: key, Backends: Backends(cl.rnd.IntN(1 << NumBackends))}
	if cl.seen[key] == 0 {
		in.Kind = Create
	}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	call := cl.rec.now()
	vs, err := invoke(cctx, m.vs, in)
	ret := cl.rec.now()
	out, known, err := outcome(in.Kind, vs, err)
	switch {
	case err != nil:
		return out, fmt.Errorf("%s %s via %s: %w", in.Kind, key, m.id, err)
	case !known:
		cl.c.unknown.Add(1)
		cl.record(m.id, in, call, math.MaxInt64, Output{Unknown: true})
		return out, fmt.Errorf("%s %s via %s: outcome unknown", in.Kind, key, m.id)
	}
	cl.record(m.id, in, call, ret, out)
	switch out.Code {
	case codes.OK:
		return out, nil
	case codes.NotFound:
		cl.seen[key] = 0
	case codes.AlreadyExists:
		cl.seen[key] = 1
	}
	return out, fmt.Errorf("%s %s: %s", in.Kind, key, out.Code)
}

func (cl *client) record(via string, in Input, call, ret int64, out Output) {
	cl.c.ops.Add(1)
	cl.rec.add(porcupine.Operation{ClientId: cl.id, Input: in, Call: call, Output: out, Return: ret, Metadata: via})
}

func backendList(b Backends) []*edgelbv1.Backend {
	var out []*edgelbv1.Backend
	for i := 0; i < NumBackends; i++ {
		if b&(1<<i) != 0 {
			out = append(out, &edgelbv1.Backend{Address: backendAddr(i)})
		}
	}
	return out
}

func spec(key string, b Backends) *edgelbv1.VirtualService {
	return &edgelbv1.VirtualService{Name: key, Ports: []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80}}, Backends: backendList(b)}
}

// invoke makes the API call in; the service it returns (nil for Delete).
func invoke(ctx context.Context, c edgelbv1.VirtualServiceServiceClient, in Input) (*edgelbv1.VirtualService, error) {
	switch in.Kind {
	case Get:
		r, err := c.GetVirtualService(ctx, &edgelbv1.GetVirtualServiceRequest{Name: in.Key})
		return r.GetService(), err
	case Create:
		r, err := c.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: spec(in.Key, in.Backends)})
		return r.GetService(), err
	case Update:
		r, err := c.UpdateVirtualService(ctx, &edgelbv1.UpdateVirtualServiceRequest{Service: spec(in.Key, in.Backends), ExpectedGeneration: in.Gen})
		return r.GetService(), err
	case Delete:
		_, err := c.DeleteVirtualService(ctx, &edgelbv1.DeleteVirtualServiceRequest{Name: in.Key, ExpectedGeneration: in.Gen})
		return nil, err
	case AddBackend:
		r, err := c.AddBackend(ctx, &edgelbv1.AddBackendRequest{Name: in.Key, Backend: &edgelbv1.Backend{Address: backendAddr(in.Backend)}})
		return r.GetService(), err
	case RemoveBackend:
		r, err := c.RemoveBackend(ctx, &edgelbv1.RemoveBackendRequest{Name: in.Key, Address: backendAddr(in.Backend)})
		return r.GetService(), err
	}
	return nil, fmt.Errorf("unknown call kind %d", in.Kind)
}

// outcome turns a call's answer into the model's Output. known is false when
// the call may or may not have taken effect (decided by its gRPC code alone);
// err is set for answers a correct cluster never gives these calls.
func outcome(kind Kind, vs *edgelbv1.VirtualService, err error) (out Output, known bool, _ error) {
	switch code := status.Code(err); code {
	case codes.OK:
		out = Output{Code: codes.OK}
		if kind == Delete {
			return out, true, nil
		}
		if vs == nil {
			return out, false, fmt.Errorf("%s answered OK without the service", kind)
		}
		out.Gen = vs.Generation
		for _, b := range vs.Backends {
			i := -1
			for j := 0; j < NumBackends; j++ {
				if b.Address == backendAddr(j) {
					i = j
				}
			}
			if i < 0 || b.Port != 0 {
				return out, false, fmt.Errorf("%s returned a backend no client adds: %s:%d", kind, b.Address, b.Port)
			}
			out.Backends |= 1 << i
		}
		return out, true, nil
	case codes.NotFound, codes.AlreadyExists, codes.Aborted:
		// Decided by the FSM on the state the command applied to.
		return Output{Code: code}, true, nil
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		slog.Debug("call of unknown outcome", "kind", kind, "err", err)
		return Output{}, false, nil
	default:
		return Output{}, false, fmt.Errorf("unexpected answer: %w", err)
	}
}

// faultKinds are what the injector does to a member.
var faultKinds = []string{"sigkill", "sigkill-leader", "sigstop", "sigstop-leader"}

// injectFaults harms one member at a time until ctx ends, and brings it back
// before the next: a SIGKILL followed by a restart from its data dir, or a
// SIGSTOP long enough to cost it its leadership, then SIGCONT. The majority
// stays up, so the cluster keeps answering. It returns with every member
// running.
func injectFaults(ctx context.Context, ms []*member, c *counts, rec *record) error {
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	pause := func(lo, hi int) {
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(lo+rnd.IntN(hi-lo)) * time.Millisecond):
		}
	}
	for i := 0; ; i++ {
		pause(200, 600)
		if ctx.Err() != nil {
			return nil
		}
		kind := faultKinds[i%len(faultKinds)]
		victim := ms[rnd.IntN(len(ms))]
		if kind == "sigkill-leader" || kind == "sigstop-leader" {
			if l := leaderOf(ctx, ms); l != nil {
				victim = l
			}
		}
		start := rec.now()
		switch kind {
		case "sigkill", "sigkill-leader":
			victim.kill()
			c.fault(kind)
			pause(200, 1000)
			if err := victim.start(lbdBin); err != nil {
				return err
			}
		case "sigstop", "sigstop-leader":
			if !victim.signal(syscall.SIGSTOP) {
				return fmt.Errorf("SIGSTOP %s: not running", victim.id)
			}
			c.fault(kind)
			fmt.Fprintf(victim.log, "==== test: SIGSTOP %s\n", victim.id)
			pause(600, 2000)
			victim.signal(syscall.SIGCONT)
			fmt.Fprintf(victim.log, "==== test: SIGCONT %s\n", victim.id)
		}
		// Back before the next fault: it answers and knows a leader. Not
		// bound to ctx: the injector must leave every member running.
		bctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		err := waitBack(bctx, victim)
		cancel()
		c.mark(victim.id, kind+" until back", start, rec.now())
		if err != nil {
			return fmt.Errorf("%s not back within 60s after %s: %w", victim.id, kind, err)
		}
	}
}

func waitBack(ctx context.Context, m *member) error {
	for {
		st, err := m.status(ctx)
		if err == nil && st.LeaderId != "" {
			return nil
		}
		if !m.alive() {
			return fmt.Errorf("%s exited", m.id)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// leaderOf is the member the first answering member names leader.
func leaderOf(ctx context.Context, ms []*member) *member {
	for _, m := range ms {
		st, err := m.status(ctx)
		if err != nil || st.LeaderId == "" {
			continue
		}
		for _, x := range ms {
			if x.id == st.LeaderId {
				return x
			}
		}
	}
	return nil
}
