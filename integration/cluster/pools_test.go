package cluster

import (
	"os"
	"strings"
	"testing"
)

// TestPoolsAgainstHostAddresses runs two real lbd processes on loopback,
// control-plane-only, whose data interface addresses and gateway come from
// their YAML configuration: the path an operator takes, without reading or
// touching the host's networking. Pools over those addresses are refused
// (exit 6) unless --allow-host-addresses; a member that joins with an
// address inside an existing pool is admitted with a warning; pools grow and
// shrink through lbctl pool update.
func TestPoolsAgainstHostAddresses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts lbd processes; skipped with -short")
	}
	c := newCluster(t, 2)
	for i, extra := range []string{
		"dataPlane:\n  interfaceAddresses: [192.0.2.11]\n  gateways: [192.0.2.1]\n",
		"dataPlane:\n  interfaceAddresses: [198.51.100.12]\n",
	} {
		m := c.members[i]
		b, err := os.ReadFile(m.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(m.cfg, append(b, extra...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c.members[0].start(t)
	one := c.endpoints(c.members[1])
	c.waitVoters(t, one, 1)

	_, errs, code := lbctl(t, one, "pool", "create", "public", "--range", "192.0.2.0/24")
	if code != 6 || !strings.Contains(errs, "range 192.0.2.0/24 holds 192.0.2.11, the address of data interface eth0 of member edge1") || !strings.Contains(errs, "--allow-host-addresses") {
		t.Fatalf("pool over the interface address: exit %d: %s", code, errs)
	}
	_, errs, code = lbctl(t, one, "pool", "create", "public", "--range", "192.0.2.0/29")
	if code != 6 || !strings.Contains(errs, "192.0.2.1, the default gateway of member edge1") {
		t.Fatalf("pool over the gateway: exit %d: %s", code, errs)
	}
	mustLbctl(t, one, "pool", "create", "public", "--range", "192.0.2.16/28")
	mustLbctl(t, one, "pool", "create", "lab", "--range", "192.0.2.8-192.0.2.11", "--allow-host-addresses")
	mustLbctl(t, one, "pool", "create", "other", "--range", "198.51.100.0/24")

	// edge2 reports an address in pool other; it joins all the same.
	c.members[1].start(t)
	all := c.endpoints()
	c.waitVoters(t, all, 2)
	eventually(t, 15e9, "edge2 warns about pool other", func() error {
		out, errs, code := lbctl(t, []string{c.members[1].api}, "member", "status")
		if code != 0 {
			return errString("exit " + errs)
		}
		if !strings.Contains(out, "WARNING edge2: address pool other") || !strings.Contains(out, "198.51.100.12") {
			return errString("no warning yet:\n" + out)
		}
		return nil
	})
	if strings.Contains(c.members[0].log.String(), "address pool holds an address of this member") == false &&
		strings.Contains(c.members[1].log.String(), "address pool holds an address of this member") == false {
		t.Errorf("no member logged the conflict")
	}

	// Grow a full pool through a follower; shrink refused while in use.
	mustLbctl(t, all, "pool", "update", "public", "--remove-range", "192.0.2.16/28", "--add-range", "192.0.2.32/31")
	mustLbctl(t, all, "vip", "create", "a", "--port", "tcp/80", "--pool", "public")
	mustLbctl(t, all, "vip", "create", "b", "--port", "tcp/80", "--pool", "public")
	_, errs, code = lbctl(t, all, "vip", "create", "c", "--port", "tcp/80", "--pool", "public")
	if code == 0 || !strings.Contains(errs, "lbctl pool update public --add-range") {
		t.Fatalf("full pool: exit %d: %s", code, errs)
	}
	out := mustLbctl(t, all, "pool", "update", "public", "--add-range", "192.0.2.48/28", "-o", "json")
	if p := decode(t, out); p["generation"] != "3" {
		t.Fatalf("pool update -o json: %s", out)
	}
	mustLbctl(t, all, "vip", "create", "c", "--port", "tcp/80", "--pool", "public")
	_, errs, code = lbctl(t, all, "pool", "update", "public", "--remove-range", "192.0.2.32/31")
	if code != 6 || !strings.Contains(errs, "192.0.2.32 (default/a)") {
		t.Fatalf("shrink under a VIP: exit %d: %s", code, errs)
	}
	// IPv6 asked of IPv4-only pools: the missing pool is named, not "no free address".
	_, errs, code = lbctl(t, all, "vip", "create", "six", "--port", "tcp/80", "--family", "ipv6")
	if code != 6 || !strings.Contains(errs, "no address pool for IPv6") {
		t.Fatalf("ipv6 without pools: exit %d: %s", code, errs)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
