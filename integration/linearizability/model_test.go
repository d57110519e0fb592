package linearizability

import (
	"math"
	"testing"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc/codes"
)

// op builds a history entry; ret < 0 means the outcome is unknown.
func op(client int, call, ret int64, in Input, out Output) porcupine.Operation {
	if ret < 0 {
		ret, out = math.MaxInt64, Output{Unknown: true}
	}
	return porcupine.Operation{ClientId: client, Call: call, Return: ret, Input: in, Output: out}
}

func ok(gen uint64, b Backends) Output { return Output{Code: codes.OK, Gen: gen, Backends: b} }

// TestModelCatches makes sure the model and the checker find the anomalies the
// cluster test is after, and accept what a correct cluster may answer.
func TestModelCatches(t *testing.T) {
	create := Input{Kind: Create, Key: "a", Backends: 1}
	add := Input{Kind: AddBackend, Key: "a", Backend: 1}
	get := Input{Kind: Get, Key: "a"}
	cases := []struct {
		name string
		want porcupine.CheckResult
		h    []porcupine.Operation
	}{
		{"sequential history", porcupine.Ok, []porcupine.Operation{
			op(0, 0, 1, create, ok(1, 1)),
			op(0, 2, 3, add, ok(2, 3)),
			op(1, 4, 5, Input{Kind: Update, Key: "a", Gen: 1, Backends: 4}, Output{Code: codes.Aborted}),
			op(1, 6, 7, Input{Kind: Update, Key: "a", Gen: 2, Backends: 4}, ok(3, 4)),
			op(0, 8, 9, Input{Kind: RemoveBackend, Key: "a", Backend: 2}, ok(4, 0)),
			op(0, 10, 11, Input{Kind: Delete, Key: "a"}, Output{Code: codes.OK}),
			op(1, 12, 13, get, Output{Code: codes.NotFound}),
		}},
		{"stale read after an acknowledged write", porcupine.Illegal, []porcupine.Operation{
			op(0, 0, 1, create, ok(1, 1)),
			op(0, 2, 3, add, ok(2, 3)),
			op(1, 4, 5, get, ok(1, 1)),
		}},
		{"acknowledged write lost", porcupine.Illegal, []porcupine.Operation{
			op(0, 0, 1, create, ok(1, 1)),
			op(1, 2, 3, get, Output{Code: codes.NotFound}),
		}},
		{"two creates both succeed", porcupine.Illegal, []porcupine.Operation{
			op(0, 0, 10, create, ok(1, 1)),
			op(1, 0, 10, create, ok(1, 1)),
		}},
		{"a write whose outcome is unknown may have been applied", porcupine.Ok, []porcupine.Operation{
			op(0, 0, 1, create, ok(1, 1)),
			op(0, 2, -1, add, Output{}),
			op(1, 4, 5, get, ok(2, 3)),
		}},
		{"or not", porcupine.Ok, []porcupine.Operation{
			op(0, 0, 1, create, ok(1, 1)),
			op(0, 2, -1, add, Output{}),
			op(1, 4, 5, get, ok(1, 1)),
		}},
		{"but not once and then undone", porcupine.Illegal, []porcupine.Operation{
			op(0, 0, 1, create, ok(1, 1)),
			op(0, 2, -1, add, Output{}),
			op(1, 4, 5, get, ok(2, 3)),
			op(1, 6, 7, get, ok(1, 1)),
		}},
		{"services are independent", porcupine.Ok, []porcupine.Operation{
			op(0, 0, 1, create, ok(1, 1)),
			op(1, 2, 3, Input{Kind: Get, Key: "b"}, Output{Code: codes.NotFound}),
			op(1, 4, 5, Input{Kind: Create, Key: "b", Backends: 2}, ok(1, 2)),
		}},
	}
	for _, tc := range cases {
		if got := porcupine.CheckOperations(Model, tc.h); (got == true) != (tc.want == porcupine.Ok) {
			t.Errorf("%s: linearizable = %v, want %s", tc.name, got, tc.want)
		}
	}
}
