package fsm

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
)

var _ raft.BatchingFSM = (*FSM)(nil)

// Applying entries in batches (raft's BatchingFSM) decides each one as
// applying them one by one does — same results, same state, same change
// feed. Configuration entries are raft's own and get no result.
func TestApplyBatchMatchesApply(t *testing.T) {
	ops := []any{
		member("m1"), member("m2"), createPool(pool("p", "10.0.0.0/28")),
		createOwned(withBackends(svc("t1", "a", ""), backend("192.0.2.1", 30080)), "m1"),
		create(shared(svc("t1", "b", "10.0.0.5", tcp(443)), "k")),
		create(shared(svc("t1", "c", "10.0.0.5", tcp(80)), "k")),
		create(svc("t1", "a", "")), // refused: exists
		create(svc("t1", "d", "")),
		deleteVS("t1", "d"),
		&raftv1.DrainBackend{Tenant: "t1", Name: "a", Address: "192.0.2.1", Port: 30080, Drained: true},
		owners(assign("t1", "b", "m2"), assign("t1", "c", "m2")),
		deleteVS("t1", "nope"), // refused: not found
		create(svc("t1", "e", "")),
	}
	var logs []*raft.Log
	for _, op := range ops {
		idx := uint64(len(logs) + 1)
		if idx%4 == 0 {
			logs = append(logs, &raft.Log{Index: idx, Term: 1, Type: raft.LogConfiguration})
			idx++
		}
		b, err := proto.Marshal(command(idx, op))
		if err != nil {
			t.Fatal(err)
		}
		logs = append(logs, rlog(idx, b))
	}
	one := New(quiet)
	var want []string
	for _, l := range logs {
		if l.Type != raft.LogCommand {
			want = append(want, "<nil>")
			continue
		}
		want = append(want, describe(safeApply(t, one, l)))
	}
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 1))
		f := New(quiet)
		var got []string
		for i := 0; i < len(logs); {
			n := 1 + r.IntN(5)
			n = min(n, len(logs)-i)
			for _, res := range f.ApplyBatch(logs[i : i+n]) {
				if res == nil {
					got = append(got, "<nil>")
					continue
				}
				got = append(got, describe(res.(*Result)))
			}
			i += n
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("seed %d: batched results\n%v\none by one\n%v", seed, got, want)
		}
		if !bytes.Equal(persist(t, f), persist(t, one)) {
			t.Fatalf("seed %d: batched state differs from one by one", seed)
		}
		if a, b := f.Cursor(), one.Cursor(); a != b {
			t.Fatalf("seed %d: cursor %v batched, %v one by one", seed, a, b)
		}
	}
}

func describe(r *Result) string {
	name := ""
	if r.Service != nil {
		name = r.Service.Name + "@" + r.Service.Vip
	}
	return fmt.Sprintf("%v/%d/%s", r.Code, r.Revision, name)
}
