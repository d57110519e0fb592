package bgp

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/edgelb/edgelb/lbd/config"
)

// The BFD test runs two GoBGP speakers with BFD, each in a network
// namespace of its own joined by a veth pair: GoBGP's BFD listens on UDP
// 3784 on every address, so two speakers in one namespace would take each
// other's packets. The member side is this package's Speaker; the router
// side a plain GoBGP. Each child keeps the session up for bfdWindow, many
// times the detection time, then through a link cut and its return, and
// reports the resets it saw in each phase: BGP sessions that left
// established, BFD failure transitions, and polls that found BFD not up.
// GoBGP v4.8.0 had a BFD stale-reset flap (fixed in v4.9.0, which go.mod
// pins); this test is what would show it.

const (
	bfdChildEnv = "EDGELB_BFD_CHILD"
	bfdRouterIP = "10.203.0.1"
	bfdMemberIP = "10.203.0.2"
	// lbd's default BFD timers (900ms detection). 100ms × 3 expired for
	// real on this shared 2-core machine under a parallel test load: a
	// starved process, not a GoBGP flap.
	bfdInterval = config.DefaultBFDInterval
	bfdMult     = config.DefaultBFDMultiplier
	bfdDetect   = bfdInterval * bfdMult
	bfdWindow   = 40 * bfdDetect // steady phase: 40 × the detection time
)

func TestBFDSessionStaysUp(t *testing.T) {
	if os.Getenv("EDGELB_BFD_SOAK") != "1" {
		// About two minutes of real BFD timers: a stage of its own in
		// make test (scripts/test.sh), not part of go test ./... and its
		// race run, where a starved scheduler would expire BFD for real.
		t.Skip("the BFD soak runs for about two minutes; run it with EDGELB_BFD_SOAK=1 (as root)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip")
	}
	tag := strconv.Itoa(os.Getpid())
	nsR, nsM := "edgelb-bfd-r-"+tag, "edgelb-bfd-m-"+tag
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", nsR)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", nsR).Run() })
	ip("netns", "add", nsM)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", nsM).Run() })
	ip("-n", nsR, "link", "add", "bfd0", "type", "veth", "peer", "name", "bfd0", "netns", nsM)
	for ns, a := range map[string]string{nsR: bfdRouterIP, nsM: bfdMemberIP} {
		ip("-n", ns, "link", "set", "lo", "up")
		ip("-n", ns, "addr", "add", a+"/30", "dev", "bfd0")
		ip("-n", ns, "link", "set", "bfd0", "up")
	}

	type child struct {
		cmd  *exec.Cmd
		line chan string
		in   io.Writer
	}
	start := func(ns, role string) child {
		cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^TestBFDChild$", "-test.v")
		cmd.Env = append(os.Environ(), bfdChildEnv+"="+role)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		c := child{cmd: cmd, line: make(chan string, 4), in: in}
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if l := sc.Text(); strings.HasPrefix(l, "RESULT ") || l == "DISABLED" {
					c.line <- l
				}
			}
			close(c.line)
		}()
		return c
	}
	router, member := start(nsR, "router"), start(nsM, "member")
	children := []struct {
		name string
		ch   child
	}{{"router", router}, {"member", member}}
	check := func(phase string) {
		t.Helper()
		for _, c := range children {
			select {
			case l, ok := <-c.ch.line:
				if !ok {
					t.Fatalf("%s child ended without a %s result", c.name, phase)
				}
				t.Logf("%s: %s", c.name, l)
				var ph string
				var up, resets, failures, notUp int
				if _, err := fmt.Sscanf(l, "RESULT phase=%s up=%d resets=%d bfd_failures=%d bfd_not_up_polls=%d", &ph, &up, &resets, &failures, &notUp); err != nil || ph != phase {
					t.Fatalf("%s: unreadable %s result %q: %v", c.name, phase, l, err)
				}
				if up != 1 {
					t.Fatalf("%s, %s: session and BFD never both came up", c.name, phase)
				}
				if resets != 0 || failures != 0 || notUp != 0 {
					t.Errorf("%s, %s: BGP resets %d, BFD failures %d, polls with BFD not up %d; want 0 (a flap)", c.name, phase, resets, failures, notUp)
				}
			case <-time.After(bfdWindow + 3*time.Minute):
				t.Fatalf("%s child gave no %s result", c.name, phase)
			}
		}
	}
	// Phase "steady": up for bfdWindow.
	check("steady")
	// Phase "relink": the link goes down for 3 detection times (BFD
	// and BGP go down), comes back; from the first re-establishment on, the
	// session must stay up. GoBGP before v4.9.0 could queue a notification
	// while the session was down (BFD expiring again) that killed the next
	// session right after it established.
	ip("-n", nsM, "link", "set", "bfd0", "down")
	time.Sleep(3 * bfdDetect)
	ip("-n", nsM, "link", "set", "bfd0", "up")
	check("relink")
	// Phase "bgpdown": the router disables the BGP session while BFD stays
	// up, the link is cut (BFD expires with no BGP session: the case
	// v4.9.0's fix names), comes back, and the router enables the session
	// again: from its first establishment it must stay up.
	fmt.Fprintln(router.in, "disable")
	select {
	case l := <-router.line:
		if l != "DISABLED" {
			t.Fatalf("router: %q, want DISABLED", l)
		}
	case <-time.After(time.Minute):
		t.Fatal("router never disabled the session")
	}
	time.Sleep(time.Second)
	ip("-n", nsM, "link", "set", "bfd0", "down")
	time.Sleep(3 * bfdDetect)
	ip("-n", nsM, "link", "set", "bfd0", "up")
	time.Sleep(2 * bfdDetect) // BFD comes back up first
	fmt.Fprintln(router.in, "enable")
	check("bgpdown")
}

// TestBFDChild is one side of TestBFDSessionStaysUp, run in its namespace.
func TestBFDChild(t *testing.T) {
	role := os.Getenv(bfdChildEnv)
	if role == "" {
		t.Skip("run by TestBFDSessionStaysUp")
	}
	ctx := context.Background()
	bfd := &api.BfdPeerConfig{Enabled: true, DesiredMinimumTxInterval: uint32(bfdInterval.Microseconds()),
		RequiredMinimumReceive: uint32(bfdInterval.Microseconds()), DetectionMultiplier: bfdMult}
	var srv *server.BgpServer
	var established atomic.Bool
	var resets atomic.Int64
	onState := func(to string) {
		if to == "established" {
			established.Store(true)
		} else if established.Swap(false) {
			resets.Add(1)
		}
	}
	peer := bfdRouterIP
	if role == "router" {
		peer = bfdMemberIP
		srv = server.NewBgpServer()
		go srv.Serve()
		defer srv.Stop()
		if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: 65000, RouterId: bfdRouterIP, ListenPort: 179, ListenAddresses: []string{bfdRouterIP}}}); err != nil {
			t.Fatal(err)
		}
		if err := srv.WatchEvent(ctx, server.WatchEventMessageCallbacks{OnPeerUpdate: func(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
			if ev.Type == apiutil.PEER_EVENT_STATE {
				onState(fsmState(ev.Peer.State.SessionState))
			}
		}}, server.WatchPeer()); err != nil {
			t.Fatal(err)
		}
		if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
			Conf: &api.PeerConf{NeighborAddress: bfdMemberIP, PeerAsn: 65001}, Transport: &api.Transport{PassiveMode: true}, Bfd: bfd,
		}}); err != nil {
			t.Fatal(err)
		}
	} else {
		on := true
		sp, err := Start(ctx, Options{ASN: 65001, RouterID: netip.MustParseAddr(bfdMemberIP), OnSession: func(e SessionEvent) { onState(e.To) },
			Peers: []config.BGPPeer{{Address: bfdRouterIP, ASN: 65000, BFD: config.BFD{Enabled: &on, MinTx: config.Duration{Duration: bfdInterval},
				MinRx: config.Duration{Duration: bfdInterval}, Multiplier: bfdMult}}}})
		if err != nil {
			t.Fatal(err)
		}
		defer sp.Stop()
		srv = sp.srv
	}
	bfdOf := func() (state api.BfdSessionState, failures uint64) {
		srv.ListPeer(ctx, &api.ListPeerRequest{Address: peer}, func(p *api.Peer) {
			state = p.GetState().GetBfdState().GetSessionState()
			failures = p.GetState().GetBfdState().GetFailureTransitions()
		})
		return state, failures
	}
	waitUp := func(limit time.Duration) int {
		for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(bfdInterval / 2) {
			if st, _ := bfdOf(); st == api.BfdSessionState_BFD_SESSION_STATE_UP && established.Load() {
				return 1
			}
		}
		return 0
	}
	// observe reports the resets since r0: every time a session left
	// established, counted by the event callback (polling would miss a
	// session killed the moment it established, which is the flap).
	observe := func(phase string, up int, window time.Duration, r0 int64) {
		_, failures0 := bfdOf()
		notUp := 0
		if up == 1 {
			for end := time.Now().Add(window); time.Now().Before(end); time.Sleep(bfdInterval / 2) {
				if st, _ := bfdOf(); st != api.BfdSessionState_BFD_SESSION_STATE_UP {
					notUp++
				}
			}
		}
		_, failures1 := bfdOf()
		fmt.Printf("RESULT phase=%s up=%d resets=%d bfd_failures=%d bfd_not_up_polls=%d\n", phase, up, resets.Load()-r0, failures1-failures0, notUp)
	}
	up := waitUp(30 * time.Second)
	observe("steady", up, bfdWindow, resets.Load())

	// The parent cuts the link now: once the session dropped (one reset,
	// the cut's), every further reset is a flap.
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && established.Load(); time.Sleep(10 * time.Millisecond) {
	}
	r0 := resets.Load()
	up = waitUp(90 * time.Second)
	observe("relink", up, 10*bfdDetect, r0)

	if role == "router" {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() && sc.Text() != "disable" {
		}
		if err := srv.DisablePeer(ctx, &api.DisablePeerRequest{Address: bfdMemberIP}); err != nil {
			t.Fatal(err)
		}
		fmt.Println("DISABLED")
		for sc.Scan() && sc.Text() != "enable" {
		}
		if err := srv.EnablePeer(ctx, &api.EnablePeerRequest{Address: bfdMemberIP}); err != nil {
			t.Fatal(err)
		}
	}
	// The router disabled the session: it dropped (one reset) on both sides
	// by now or soon; every reset after that is a flap.
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && established.Load(); time.Sleep(10 * time.Millisecond) {
	}
	r0 = resets.Load()
	up = waitUp(90 * time.Second)
	observe("bgpdown", up, 10*bfdDetect, r0)
	// Stay up until the parent has both results: leaving first would look
	// like a failure to the other side.
	time.Sleep(time.Minute)
}
