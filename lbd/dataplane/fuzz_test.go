package dataplane

import (
	"context"
	"log/slog"
	"testing"

	"google.golang.org/protobuf/proto"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/fsm"
	"github.com/edgelb/edgelb/raft/rules"
)

func fuzzCmd(op any) *raftv1.Command {
	c := &raftv1.Command{Version: fsm.CommandVersion, Rules: uint32(rules.Current)}
	switch o := op.(type) {
	case *raftv1.CreateAddressPool:
		c.Op = &raftv1.Command_CreateAddressPool{CreateAddressPool: o}
	case *raftv1.CreateVirtualService:
		c.Op = &raftv1.Command_CreateVirtualService{CreateVirtualService: o}
	case *raftv1.UpdateVirtualService:
		c.Op = &raftv1.Command_UpdateVirtualService{UpdateVirtualService: o}
	case *raftv1.AddBackend:
		c.Op = &raftv1.Command_AddBackend{AddBackend: o}
	case *raftv1.SetBackends:
		c.Op = &raftv1.Command_SetBackends{SetBackends: o}
	case *raftv1.PutMember:
		c.Op = &raftv1.Command_PutMember{PutMember: o}
	}
	return c
}

func fuzzService(name, vip string) *edgelbv1.VirtualService {
	return &edgelbv1.VirtualService{Tenant: "default", Name: name, Vip: vip, IpFamily: edgelbv1.IPFamily_IP_FAMILY_IPV4,
		Scheduler: edgelbv1.Scheduler_SCHEDULER_MH, ForwardingMode: edgelbv1.ForwardingMode_FORWARDING_MODE_NAT,
		Ports:    []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80, BackendPort: 30080}},
		Backends: []*edgelbv1.Backend{{Address: "10.1.0.1", Weight: 1}}}
}

// FuzzPlanCommand feeds random raft commands (the bytes of raftv1.Command) to
// the FSM's apply and what it then holds to the data plane's planner on a fake
// kernel: nothing panics, a pass is never failed by one service, and nothing
// the FSM stored breaks the API's rules. The command's own service also goes
// to the planner directly, as a newer or broken member might have stored it.
func FuzzPlanCommand(f *testing.F) {
	seeds := []any{
		&raftv1.CreateVirtualService{Service: fuzzService("web2", "192.0.2.9"), Owner: "me"},
		&raftv1.CreateVirtualService{Service: func() *edgelbv1.VirtualService {
			v := fuzzService("bad", "192.0.2.8")
			v.Scheduler, v.Tenant, v.Ports[0].Protocol, v.Ports[0].Port = 42, "", 99, 0
			return v
		}()},
		&raftv1.UpdateVirtualService{Service: fuzzService("web", "192.0.2.10")},
		&raftv1.AddBackend{Tenant: "default", Name: "web", Backend: &edgelbv1.Backend{Address: "10.1.0.1", Port: 30080, Weight: 1}},
		&raftv1.SetBackends{Tenant: "default", Name: "web", Backends: []*edgelbv1.Backend{{Address: "192.0.2.10", Weight: 1}}},
	}
	for _, op := range seeds {
		b, err := proto.Marshal(fuzzCmd(op))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var cmd raftv1.Command
		if proto.Unmarshal(data, &cmd) != nil {
			return
		}
		s := fsm.New(slog.New(slog.DiscardHandler))
		idx := uint64(0)
		must := func(op any) {
			idx++
			if r := s.ApplyCommand(idx, fuzzCmd(op)); r.Err() != nil {
				t.Fatal(r.Err())
			}
		}
		must(&raftv1.PutMember{Member: &edgelbv1.Member{Id: "me", RaftAddress: "127.0.0.1:7701", ApiAddress: "127.0.0.1:7700"}})
		must(&raftv1.CreateAddressPool{Pool: &edgelbv1.AddressPool{Name: "p", Ranges: []string{"192.0.2.0/24"}}})
		must(&raftv1.CreateVirtualService{Service: fuzzService("web", "192.0.2.10"), Owner: "me"})

		e, _, _, _ := fakeEngine(t)
		before, _ := s.List(fsm.Filter{})
		if err := e.Reconcile(context.Background(), before, "me"); err != nil {
			t.Fatal(err)
		}
		s.ApplyCommand(idx+1, &cmd)
		after, _ := s.List(fsm.Filter{})
		for _, vs := range after {
			if err := rules.Stored(vs, rules.Legacy); err != nil {
				t.Fatalf("the FSM accepted %v and holds a service the API would refuse: %v", &cmd, err)
			}
		}
		if err := e.Reconcile(context.Background(), after, "me"); err != nil {
			t.Fatalf("planning what the FSM holds: %v", err)
		}
		if len(e.Isolated()) != 0 {
			t.Fatalf("the FSM holds services the planner cannot program: %q", e.Isolated())
		}
		raw := append([]*edgelbv1.VirtualService(nil), after...)
		if vs := cmd.GetCreateVirtualService().GetService(); vs != nil {
			raw = append(raw, vs)
		}
		if vs := cmd.GetUpdateVirtualService().GetService(); vs != nil {
			raw = append(raw, vs)
		}
		if err := e.Reconcile(context.Background(), raw, "me"); err != nil {
			t.Fatalf("one raw service failed the pass: %v", err)
		}
	})
}
