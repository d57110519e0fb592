// Package linearizability checks that edgelb's virtual-service API is
// linearizable while members are killed, frozen and restarted: concurrent
// clients drive three real lbd processes over the gRPC API, every call's
// invocation and response times and outcome are recorded, and the history is
// checked with porcupine against a sequential model of the key space. Calls
// whose outcome the client cannot know (a timeout, Unavailable after the
// request was sent) are recorded as possibly applied: their response time is
// infinite and the model accepts any answer.
//
// The check runs only with EDGELB_LINEAR=1 (scripts/test.sh sets it); make
// bench runs it ten times (EDGELB_LINEAR_RUNS).
package linearizability

import (
	"fmt"
	"math/bits"
	"strings"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc/codes"
)

// Kind is an API call the clients make.
type Kind int

const (
	Get Kind = iota
	Create
	Update // with the generation the client last saw (optimistic concurrency)
	Delete
	AddBackend
	RemoveBackend
)

func (k Kind) String() string {
	return [...]string{"get", "create", "update", "delete", "add-backend", "remove-backend"}[k]
}

// Backends is a set of backend addresses, bit i being backendAddr(i).
type Backends uint8

// NumBackends is how many distinct backend addresses the clients use: few,
// so that adds and removes collide.
const NumBackends = 6

func backendAddr(i int) string { return fmt.Sprintf("10.0.0.%d", i+1) }

func (b Backends) String() string {
	var s []string
	for i := 0; i < NumBackends; i++ {
		if b&(1<<i) != 0 {
			s = append(s, backendAddr(i))
		}
	}
	return "{" + strings.Join(s, ",") + "}"
}

// Input is one call: its kind, the service (the partition key) and its arguments.
type Input struct {
	Kind Kind
	Key  string
	// Gen is the expected generation of Update and Delete (0: any).
	Gen uint64
	// Backends is the list Create and Update send.
	Backends Backends
	// Backend is the index of the address AddBackend and RemoveBackend name.
	Backend int
}

// Output is what the call returned. Unknown marks a call whose outcome the
// client cannot know; the model accepts any state it could have produced.
type Output struct {
	Unknown bool
	Code    codes.Code // OK, NotFound, AlreadyExists, Aborted (generation mismatch)
	// Gen and Backends are the service the call returned (OK only; Delete returns none).
	Gen      uint64
	Backends Backends
}

// State is one service as the model sees it.
type State struct {
	Exists   bool
	Gen      uint64
	Backends Backends
}

func (s State) String() string {
	if !s.Exists {
		return "absent"
	}
	return fmt.Sprintf("gen %d %s", s.Gen, s.Backends)
}

// step is the sequential specification of one call on one service: the answer
// the FSM gives and the state it leaves (raft/fsm/apply.go).
func step(s State, in Input) (Output, State) {
	res := func(code codes.Code) (Output, State) { return Output{Code: code}, s }
	stored := func(n State) (Output, State) {
		return Output{Code: codes.OK, Gen: n.Gen, Backends: n.Backends}, n
	}
	switch in.Kind {
	case Get:
		if !s.Exists {
			return res(codes.NotFound)
		}
		return stored(s)
	case Create:
		if s.Exists {
			return res(codes.AlreadyExists)
		}
		return stored(State{Exists: true, Gen: 1, Backends: in.Backends})
	case Update:
		if !s.Exists {
			return res(codes.NotFound)
		}
		if in.Gen != 0 && in.Gen != s.Gen {
			return res(codes.Aborted)
		}
		return stored(State{Exists: true, Gen: s.Gen + 1, Backends: in.Backends})
	case Delete:
		if !s.Exists {
			return res(codes.NotFound)
		}
		if in.Gen != 0 && in.Gen != s.Gen {
			return res(codes.Aborted)
		}
		return Output{Code: codes.OK}, State{}
	case AddBackend:
		bit := Backends(1) << in.Backend
		if !s.Exists {
			return res(codes.NotFound)
		}
		if s.Backends&bit != 0 {
			return res(codes.AlreadyExists)
		}
		return stored(State{Exists: true, Gen: s.Gen + 1, Backends: s.Backends | bit})
	case RemoveBackend:
		bit := Backends(1) << in.Backend
		if !s.Exists || s.Backends&bit == 0 {
			return res(codes.NotFound)
		}
		return stored(State{Exists: true, Gen: s.Gen + 1, Backends: s.Backends &^ bit})
	}
	panic(fmt.Sprintf("unknown call kind %d", in.Kind))
}

// Model is the porcupine model of the virtual-service key space, partitioned
// by service: services are independent, so each is checked on its own.
var Model = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(Input).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return State{} },
	Step: func(state, input, output any) (bool, any) {
		want, next := step(state.(State), input.(Input))
		got := output.(Output)
		if got.Unknown {
			// Possibly applied: porcupine may place it anywhere after its
			// call (its return is infinite), including after every other
			// call, which is the same as never applied.
			return true, next
		}
		return got == want, next
	},
	Hash: func(state any) uint64 {
		s := state.(State)
		if !s.Exists {
			return 0
		}
		return bits.RotateLeft64(s.Gen, 8) ^ uint64(s.Backends) ^ 1<<63
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(Input), output.(Output)
		var args string
		switch in.Kind {
		case Create:
			args = in.Backends.String()
		case Update:
			args = fmt.Sprintf("if gen %d, %s", in.Gen, in.Backends)
		case Delete:
			args = fmt.Sprintf("if gen %d", in.Gen)
		case AddBackend, RemoveBackend:
			args = backendAddr(in.Backend)
		}
		var res string
		switch {
		case out.Unknown:
			res = "unknown (possibly applied)"
		case out.Code != codes.OK:
			res = out.Code.String()
		case in.Kind == Delete:
			res = "OK"
		default:
			res = fmt.Sprintf("gen %d %s", out.Gen, out.Backends)
		}
		return fmt.Sprintf("%s %s(%s) → %s", in.Kind, in.Key, args, res)
	},
	DescribeState: func(state any) string { return state.(State).String() },
}
