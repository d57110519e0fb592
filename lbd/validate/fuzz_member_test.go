package validate

import (
	"testing"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// FuzzMember: the member validator (AddMember, joins) never panics, and what it
// accepts has an id that is a valid name and addresses with ports.
func FuzzMember(f *testing.F) {
	f.Add("edge1", "10.0.0.11:7701", "10.0.0.11:7700", "eth0")
	f.Add("", "[fd00::11]:7701", "host.example:7700", "a-very-long-interface-name")
	f.Fuzz(func(t *testing.T, id, raft, api, iface string) {
		m := &edgelbv1.Member{Id: id, RaftAddress: raft, ApiAddress: api, DataInterface: iface}
		if Member(m) != nil {
			return
		}
		if Name("id", m.Id, 63) != nil || HostPort("r", m.RaftAddress) != nil || HostPort("a", m.ApiAddress) != nil {
			t.Fatalf("accepted an invalid member %+v", m)
		}
	})
}
