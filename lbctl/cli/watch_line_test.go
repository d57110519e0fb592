package cli

import (
	"bytes"
	"strings"
	"testing"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// A watch line of an owner change names its reason from the enum, for
// scripts; an event that changes no owner has none.
func TestWatchLineOwnershipReason(t *testing.T) {
	var out bytes.Buffer
	a := &app{stdout: &out}
	vs := &edgelbv1.VirtualService{Tenant: "t", Name: "web", Vip: "192.0.2.1", Owner: "edge2"}
	for _, ev := range []*edgelbv1.Event{
		{Type: edgelbv1.EventType_EVENT_TYPE_PUT, Revision: 7, Reason: "owner unreachable", OwnershipReason: edgelbv1.OwnershipReason_OWNERSHIP_REASON_OWNER_UNREACHABLE,
			Object: &edgelbv1.Event_VirtualService{VirtualService: vs}},
		{Type: edgelbv1.EventType_EVENT_TYPE_PUT, Revision: 8, Reason: "updated", Object: &edgelbv1.Event_VirtualService{VirtualService: vs}},
	} {
		if err := a.printEvent(ev); err != nil {
			t.Fatal(err)
		}
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[0], `reason="owner unreachable" ownership=owner_unreachable`) || strings.Contains(lines[1], "ownership=") {
		t.Errorf("watch lines:\n%s", out.String())
	}
}
