package topo_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgelb/edgelb/integration/probe"
	"github.com/edgelb/edgelb/integration/topo"
	"github.com/edgelb/edgelb/integration/uml"
)

func TestMain(m *testing.M) {
	uml.MaybeGuestInit()
	os.Exit(m.Run())
}

// TestTopology boots a guest that runs TestTopologyInGuest from this same binary.
func TestTopology(t *testing.T) {
	if os.Getenv("EDGELB_UML") != "1" {
		t.Skip("boots a User-Mode Linux guest; run with EDGELB_UML=1 (needs scripts/uml-deps.sh)")
	}
	bin := t.TempDir()
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/nodeserver").CombinedOutput()
	if err != nil {
		t.Fatalf("build nodeserver: %v\n%s", err, out)
	}
	var sb strings.Builder
	res, err := uml.Run(context.Background(), uml.Options{
		Argv:    []string{os.Args[0], "-test.run", "^TestTopologyInGuest$", "-test.v"},
		Env:     append(os.Environ(), "EDGELB_TOPO_GUEST=1", "EDGELB_BIN="+bin),
		Stdout:  &sb,
		Stderr:  &sb,
		Timeout: 2 * time.Minute,
	})
	t.Log(sb.String())
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("guest test exited %d", res.ExitCode)
	}
}

func TestTopologyInGuest(t *testing.T) {
	if os.Getenv("EDGELB_TOPO_GUEST") != "1" || !uml.InGuest() {
		t.Skip("runs inside the guest only (see TestTopology)")
	}
	t0 := time.Now()
	tp, err := topo.Build(topo.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("topology built in %s", time.Since(t0))
	bin := os.Getenv("EDGELB_BIN")
	t0 = time.Now()
	for _, n := range tp.Nodes {
		if _, err := topo.StartNodeServer(n, filepath.Join(bin, "nodeserver"), t.TempDir()); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range tp.Nodes {
		for _, addr := range []string{n.V4.String(), "[" + n.V6.String() + "]"} {
			for _, proto := range []string{"tcp", "udp"} {
				name, err := topo.WaitAnswer(probe.Options{Proto: proto, Addr: addr + ":30080", NetNS: "client"}, 10*time.Second)
				if err != nil || name != n.Name {
					t.Errorf("%s %s: %q %v", proto, addr, name, err)
				}
			}
		}
	}
	t.Logf("node servers answering after %s", time.Since(t0))
	// The management address reaches every host.
	if name, err := probe.Once(probe.Options{Addr: "10.0.0.21:30080"}); err != nil || name != "node1" {
		t.Errorf("from the root namespace: %q %v", name, err)
	}
	res, err := probe.Count(context.Background(), probe.Options{Addr: "10.0.0.21:30080", NetNS: "client"}, 200, 4)
	t.Logf("straight to a node: %s", res)
	if err != nil || res.OK != 200 {
		t.Errorf("count: %v", err)
	}
}
