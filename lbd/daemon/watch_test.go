package daemon

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// watchWait bounds every wait for a watch response; generous, for a busy
// 2-core machine running three raft members in this process.
const watchWait = 30 * time.Second

func dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// watcher pumps one Watch stream into a channel, so reads can time out.
type watcher struct {
	ch     chan *edgelbv1.WatchResponse
	err    error // set before ch is closed
	cancel context.CancelFunc
}

func openWatch(t *testing.T, addr string, req *edgelbv1.WatchRequest) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	// Registered after startCluster's: runs before the members stop.
	t.Cleanup(cancel)
	s, err := edgelbv1.NewWatchServiceClient(dial(t, addr)).Watch(ctx, req)
	if err != nil {
		cancel()
		t.Fatalf("watch %s from revision %d: %v", addr, req.ResumeRevision, err)
	}
	w := &watcher{ch: make(chan *edgelbv1.WatchResponse, 64), cancel: cancel}
	go func() {
		defer close(w.ch)
		for {
			r, err := s.Recv()
			if err != nil {
				w.err = err
				return
			}
			select {
			case w.ch <- r:
			case <-ctx.Done():
				w.err = ctx.Err()
				return
			}
		}
	}()
	return w
}

func (w *watcher) next(t *testing.T) *edgelbv1.WatchResponse {
	t.Helper()
	select {
	case r, ok := <-w.ch:
		if !ok {
			t.Fatalf("watch stream ended: %v", w.err)
		}
		return r
	case <-time.After(watchWait):
		t.Fatalf("no watch response within %s", watchWait)
	}
	return nil
}

// until reads responses until one holds an event matching stop, and returns
// every response read, that one included.
func (w *watcher) until(t *testing.T, what string, stop func(*edgelbv1.Event) bool) []*edgelbv1.WatchResponse {
	t.Helper()
	var got []*edgelbv1.WatchResponse
	deadline := time.Now().Add(watchWait)
	for {
		if time.Now().After(deadline) {
			t.Fatalf("watch: %s not seen within %s", what, watchWait)
		}
		r := w.next(t)
		got = append(got, r)
		if slices.ContainsFunc(r.Events, stop) {
			return got
		}
	}
}

// drain returns what has already arrived, without waiting.
func (w *watcher) drain() []*edgelbv1.WatchResponse {
	var got []*edgelbv1.WatchResponse
	for {
		select {
		case r, ok := <-w.ch:
			if !ok {
				return got
			}
			got = append(got, r)
		default:
			return got
		}
	}
}

func isPut(name string) func(*edgelbv1.Event) bool {
	return func(e *edgelbv1.Event) bool {
		return e.Type == edgelbv1.EventType_EVENT_TYPE_PUT && e.GetVirtualService().GetName() == name
	}
}

func isCreate(name string) func(*edgelbv1.Event) bool {
	return func(e *edgelbv1.Event) bool { return isPut(name)(e) && e.Reason == "created" }
}

func isDelete(name string) func(*edgelbv1.Event) bool {
	return func(e *edgelbv1.Event) bool {
		return e.Type == edgelbv1.EventType_EVENT_TYPE_DELETE && e.GetVirtualService().GetName() == name
	}
}

// retryWrite runs a write until it succeeds, retrying while the cluster
// elects a leader (a busy machine can cost the leader its lease). A write cut
// short that way (Unavailable) may or may not have been applied, so after a
// retry done (AlreadyExists for a create, NotFound for a delete) is success.
func retryWrite(done codes.Code, f func() error) error {
	retried := false
	for deadline := time.Now().Add(watchWait); ; time.Sleep(100 * time.Millisecond) {
		err := f()
		if err == nil || retried && done != codes.OK && status.Code(err) == done {
			return nil
		}
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			return err
		}
		retried = true
	}
}

// evKey names an event by everything that must be the same on every member.
func evKey(e *edgelbv1.Event) string {
	switch o := e.Object.(type) {
	case *edgelbv1.Event_VirtualService:
		vs := o.VirtualService
		return fmt.Sprintf("%08d %s vs %s/%s gen=%d owner=%s backends=%d", e.Revision, e.Type, vs.Tenant, vs.Name, vs.Generation, vs.Owner, len(vs.Backends))
	case *edgelbv1.Event_AddressPool:
		return fmt.Sprintf("%08d %s pool %s", e.Revision, e.Type, o.AddressPool.Name)
	case *edgelbv1.Event_Member:
		return fmt.Sprintf("%08d %s member %s %s", e.Revision, e.Type, o.Member.Id, o.Member.State)
	}
	return fmt.Sprintf("%08d %s ?", e.Revision, e.Type)
}

// keysUpTo lists the events of rs up to revision max, in arrival order.
func keysUpTo(rs []*edgelbv1.WatchResponse, max uint64) []string {
	var out []string
	for _, r := range rs {
		for _, e := range r.Events {
			if e.Revision <= max {
				out = append(out, evKey(e))
			}
		}
	}
	return out
}

func eventRevision(t *testing.T, rs []*edgelbv1.WatchResponse, match func(*edgelbv1.Event) bool) uint64 {
	t.Helper()
	for _, r := range rs {
		for _, e := range r.Events {
			if match(e) {
				return e.Revision
			}
		}
	}
	t.Fatal("event not among the responses")
	return 0
}

// TestWatchStream drives the real Watch stream of a three-member in-process
// cluster over gRPC: snapshot then live events, resumption without gaps or
// duplicates, the tenant filter, and snapshots larger than one batch.
func TestWatchStream(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three raft members")
	}
	ds := startCluster(t, 3)
	leader, follower := leaderAndFollower(t, ds)
	setupPool(t, follower.Addr())
	vsc := edgelbv1.NewVirtualServiceServiceClient(dial(t, follower.Addr()))
	ctx := context.Background()
	createErr := func(tenant, name string) error {
		s := newService(0)
		s.Name, s.Tenant = name, tenant
		return retryWrite(codes.AlreadyExists, func() error {
			_, err := vsc.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: s})
			return err
		})
	}
	create := func(t *testing.T, tenant, name string) {
		t.Helper()
		if err := createErr(tenant, name); err != nil {
			t.Fatalf("create %s/%s: %v", tenant, name, err)
		}
	}
	del := func(t *testing.T, name string) {
		t.Helper()
		err := retryWrite(codes.NotFound, func() error {
			_, err := vsc.DeleteVirtualService(ctx, &edgelbv1.DeleteVirtualServiceRequest{Name: name})
			return err
		})
		if err != nil {
			t.Fatalf("delete %s: %v", name, err)
		}
	}
	setBackends := func(t *testing.T, name string, n int) {
		t.Helper()
		var bs []*edgelbv1.Backend
		for i := 0; i < n; i++ {
			bs = append(bs, &edgelbv1.Backend{Address: fmt.Sprintf("10.0.1.%d", i+1)})
		}
		err := retryWrite(codes.OK, func() error {
			_, err := vsc.SetBackends(ctx, &edgelbv1.SetBackendsRequest{Name: name, Backends: bs})
			return err
		})
		if err != nil {
			t.Fatalf("set backends of %s: %v", name, err)
		}
	}

	t.Run("from revision 0: the current state, then live events", func(t *testing.T) {
		create(t, "", "w-1")
		w := openWatch(t, follower.Addr(), &edgelbv1.WatchRequest{})
		snap := w.next(t)
		if !snap.Snapshot || snap.Revision == 0 {
			t.Fatalf("first response: snapshot=%v revision=%d; want a snapshot with its revision", snap.Snapshot, snap.Revision)
		}
		members, pools := map[string]bool{}, map[string]bool{}
		var names []string
		for _, e := range snap.Events {
			if e.Type != edgelbv1.EventType_EVENT_TYPE_PUT || e.Revision != snap.Revision {
				t.Errorf("snapshot event %s: want PUT at the snapshot revision %d", evKey(e), snap.Revision)
			}
			switch {
			case e.GetMember() != nil:
				members[e.GetMember().Id] = true
			case e.GetAddressPool() != nil:
				pools[e.GetAddressPool().Name] = true
			case e.GetVirtualService() != nil:
				names = append(names, e.GetVirtualService().Name)
			}
		}
		if len(members) != 3 || !pools["bench"] || !slices.Equal(names, []string{"w-1"}) {
			t.Fatalf("snapshot holds members %v, pools %v, services %v; want 3 members, pool bench, service w-1", members, pools, names)
		}
		create(t, "", "w-2")
		got := w.until(t, "the creation of w-2", isCreate("w-2"))
		last := got[len(got)-1]
		rev := eventRevision(t, got, isCreate("w-2"))
		if last.Snapshot || rev <= snap.Revision || last.Revision < rev {
			t.Fatalf("live event for w-2 at revision %d in a response with snapshot=%v revision=%d (snapshot was at %d)", rev, last.Snapshot, last.Revision, snap.Revision)
		}
		for _, r := range got {
			for _, e := range r.Events {
				if e.Revision <= snap.Revision {
					t.Errorf("live event %s is not newer than the snapshot (%d)", evKey(e), snap.Revision)
				}
			}
		}
	})

	t.Run("a reconnect with the resume revision gets exactly the later events", func(t *testing.T) {
		// The reference: one stream on the leader that never disconnects.
		ref := openWatch(t, leader.Addr(), &edgelbv1.WatchRequest{})
		s := ref.next(t)
		if !s.Snapshot {
			t.Fatalf("reference watch: first response is not a snapshot")
		}
		start := s.Revision
		waitFor(t, watchWait, "the follower applies the reference's snapshot revision", func() bool { return follower.Node().FSM.Revision() >= start })

		// First connection to the follower, resuming at the reference's snapshot.
		w1 := openWatch(t, follower.Addr(), &edgelbv1.WatchRequest{ResumeRevision: start})
		create(t, "", "r-1")
		create(t, "", "r-2")
		setBackends(t, "r-1", 2)
		first := w1.until(t, "the backend change of r-1", func(e *edgelbv1.Event) bool {
			return isPut("r-1")(e) && len(e.GetVirtualService().Backends) == 2
		})
		if first[0].Snapshot {
			t.Fatalf("resuming at %d, which the follower has, sent a snapshot", start)
		}
		cut := first[len(first)-1].Revision
		w1.cancel()

		// Changes while disconnected.
		create(t, "", "r-3")
		del(t, "r-2")
		setBackends(t, "r-1", 4)

		w2 := openWatch(t, follower.Addr(), &edgelbv1.WatchRequest{ResumeRevision: cut})
		create(t, "", "r-4")
		del(t, "r-3")
		create(t, "", "r-5")
		second := w2.until(t, "the creation of r-5", isCreate("r-5"))
		if second[0].Snapshot {
			t.Fatalf("resuming at %d sent a snapshot", cut)
		}
		for _, r := range second {
			for _, e := range r.Events {
				if e.Revision <= cut {
					t.Errorf("after resuming at %d: event %s again", cut, evKey(e))
				}
			}
		}
		end := eventRevision(t, second, isCreate("r-5"))
		refGot := ref.until(t, "the creation of r-5", isCreate("r-5"))

		// Compared as sorted lists: the revision leads each key, and one
		// command's several events need not come in the same order everywhere.
		got := append(keysUpTo(first, cut), keysUpTo(second, end)...)
		want := keysUpTo(refGot, end)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("watch across a reconnect (cut at %d) differs from an unbroken watch:\ngot  %q\nwant %q", cut, got, want)
		}
		for _, m := range []func(*edgelbv1.Event) bool{isCreate("r-3"), isDelete("r-2"), isDelete("r-3"), isCreate("r-4")} {
			eventRevision(t, second, m) // fails unless present
		}
	})

	t.Run("a tenant filter drops other tenants' services", func(t *testing.T) {
		create(t, "acme", "a-1")
		w := openWatch(t, follower.Addr(), &edgelbv1.WatchRequest{Tenant: "acme"})
		snap := w.next(t)
		if !snap.Snapshot {
			t.Fatal("first response is not a snapshot")
		}
		var names []string
		pools, members := 0, 0
		for _, e := range snap.Events {
			if vs := e.GetVirtualService(); vs != nil {
				names = append(names, vs.Tenant+"/"+vs.Name)
			}
			if e.GetAddressPool() != nil {
				pools++
			}
			if e.GetMember() != nil {
				members++
			}
		}
		if !slices.Equal(names, []string{"acme/a-1"}) || pools != 1 || members != 3 {
			t.Fatalf("acme's snapshot holds services %v, %d pools, %d members; want only acme/a-1, and every pool and member", names, pools, members)
		}
		// Another tenant's service, and its owner assignment, commit before a-2:
		// unfiltered, their events would come first.
		create(t, "", "noise")
		waitFor(t, watchWait, "noise gets an owner", func() bool {
			vs, ok := follower.Node().FSM.Service(fsmKey("default", "noise"))
			return ok && vs.Owner != ""
		})
		del(t, "noise")
		create(t, "acme", "a-2")
		got := w.until(t, "the creation of acme/a-2", isCreate("a-2"))
		got = append(got, w.drain()...)
		for _, r := range got {
			for _, e := range r.Events {
				if vs := e.GetVirtualService(); vs != nil && vs.Tenant != "acme" {
					t.Errorf("acme's watch got %s of tenant %q", evKey(e), vs.Tenant)
				}
			}
		}
	})

	t.Run("a snapshot of more than 1000 services comes in batches", func(t *testing.T) {
		const n = 1100
		var wg sync.WaitGroup
		errs := make(chan error, n)
		next := make(chan int, n)
		for i := 0; i < n; i++ {
			next <- i
		}
		close(next)
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					if err := createErr("", fmt.Sprintf("bulk-%04d", i)); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("create: %v", err)
		}
		// A write returns once the leader commits it; the follower, which the
		// list and the watch read, may apply the last ones a moment later.
		waitFor(t, watchWait, "the follower applies every create", func() bool {
			return follower.Node().Status().LastApplied >= leader.Node().Status().LastApplied
		})
		list, err := vsc.ListVirtualServices(ctx, &edgelbv1.ListVirtualServicesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		services := len(list.Services) // every tenant: no identity, no scope
		if services <= n {
			t.Fatalf("list shows %d services; want more than %d", services, n)
		}

		w := openWatch(t, follower.Addr(), &edgelbv1.WatchRequest{})
		// The snapshot: batches of at most 1000 events; only the first says
		// snapshot, only the last carries a revision (a client cut off
		// mid-snapshot has no revision to resume from, so starts over).
		var batches []*edgelbv1.WatchResponse
		for {
			r := w.next(t)
			batches = append(batches, r)
			if r.Revision != 0 {
				break
			}
		}
		total := 0
		vss := map[string]bool{}
		for i, r := range batches {
			if len(r.Events) > 1000 {
				t.Errorf("batch %d holds %d events; the limit is 1000", i, len(r.Events))
			}
			if r.Snapshot != (i == 0) {
				t.Errorf("batch %d: snapshot=%v; want true only on the first", i, r.Snapshot)
			}
			if i < len(batches)-1 && len(r.Events) != 1000 {
				t.Errorf("batch %d of %d holds %d events; want full batches of 1000 before the last", i, len(batches), len(r.Events))
			}
			total += len(r.Events)
			for _, e := range r.Events {
				if vs := e.GetVirtualService(); vs != nil {
					vss[vs.Tenant+"/"+vs.Name] = true
				}
			}
		}
		rev := batches[len(batches)-1].Revision
		if len(batches) < 2 {
			t.Fatalf("a snapshot of %d events came in %d response", total, len(batches))
		}
		if len(vss) != services || total != len(vss)+3+1 {
			t.Fatalf("snapshot: %d events, %d distinct services in %d batches; want every one of the %d services, 3 members and 1 pool",
				total, len(vss), len(batches), services)
		}
		// Live events follow the batched snapshot as usual.
		create(t, "", "after-bulk")
		got := w.until(t, "the creation of after-bulk", isCreate("after-bulk"))
		if r := eventRevision(t, got, isCreate("after-bulk")); r <= rev || got[0].Snapshot {
			t.Fatalf("after the batched snapshot at %d: after-bulk at revision %d, snapshot=%v", rev, r, got[0].Snapshot)
		}
	})
}
