package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/edgelb/edgelb/lbctl/exitcode"
	"github.com/edgelb/edgelb/lbd/bgp/testrouter"
	"github.com/edgelb/edgelb/lbd/config"
	"github.com/edgelb/edgelb/lbd/lbdtest"
)

// lbctl bgp status shows a member's peers (one established with a real
// GoBGP router, one that never answers); lbctl status counts the peer down
// and does not call the bgp VIP unowned.
func TestBGPStatus(t *testing.T) {
	r := testrouter.Start(t, "127.0.0.3", map[string]uint32{"127.0.0.2": 65001})
	c := lbdtest.StartCluster(t, 1, lbdtest.Plaintext(), lbdtest.WithConfig(func(cfg *config.Config) {
		cfg.BGP.ASN = 65001
		cfg.BGP.Peers = []config.BGPPeer{r.Peer("127.0.0.2"), r.DeadPeer("127.0.0.2", "127.0.0.5")}
	}))
	e := newEnvOf(t, c)
	e.ok("pool", "create", "rack", "--range", "100.64.10.0/28", "--mode", "bgp")
	e.ok("vip", "create", "web", "--pool", "rack", "--tenant", "a", "--port", "tcp/80", "--backend", "10.0.0.21")

	var tbl string
	deadline := time.Now().Add(30 * time.Second)
	for {
		tbl = e.ok("bgp", "status")
		if strings.Contains(tbl, "established") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bgp status never showed an established session:\n%s", tbl)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, want := range []string{"MEMBER", "PEER", "SESSION", "BFD", "127.0.0.3", "127.0.0.5", "established", "off"} {
		if !strings.Contains(tbl, want) {
			t.Errorf("bgp status table lacks %q:\n%s", want, tbl)
		}
	}
	var out struct {
		Items []struct {
			MemberID string `json:"memberId"`
			Enabled  bool
			Peers    []struct {
				Address      string
				SessionState string `json:"sessionState"`
			}
			AdvertisedPrefixes []string `json:"advertisedPrefixes"`
		}
	}
	if err := json.Unmarshal([]byte(e.ok("bgp", "status", "-o", "json")), &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Items) != 1 || !out.Items[0].Enabled || len(out.Items[0].Peers) != 2 || out.Items[0].Peers[1].SessionState == "established" {
		t.Errorf("bgp status -o json: %+v", out)
	}
	if len(out.Items[0].AdvertisedPrefixes) != 1 || !strings.HasPrefix(out.Items[0].AdvertisedPrefixes[0], "100.64.10.") {
		t.Errorf("advertised %v, want the VIP's /32", out.Items[0].AdvertisedPrefixes)
	}

	st := e.run("status")
	if !strings.Contains(st.out, "BGP peers down: 1 of 2") || !strings.Contains(st.out, "1 of 2 BGP peers down") {
		t.Errorf("status does not count the BGP peer down:\n%s", st.out)
	}
	if strings.Contains(st.out, "no owner") || !strings.Contains(st.out, "0 without owner") {
		t.Errorf("status calls the bgp VIP unowned:\n%s", st.out)
	}
	e.fails(exitcode.NotFound, "bgp", "status", "nobody")
}
