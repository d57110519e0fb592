package dataplane

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudflare/ipvs"

	"github.com/edgelb/edgelb/internal/logcapture"
	"github.com/edgelb/edgelb/lbd/dataplane/announce"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// records is the engine's log so far: parsed records and their text.
func records(t *testing.T, buf *logcapture.Buffer) ([]map[string]any, []string) {
	t.Helper()
	recs, raw, err := buf.Records()
	if err != nil {
		t.Fatal(err)
	}
	return recs, raw
}

// switchSender succeeds until fail is set.
type switchSender struct {
	mu   sync.Mutex
	fail bool
}

func (s *switchSender) Announce(netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return errors.New("network is down")
	}
	return nil
}
func (s *switchSender) Close() error { return nil }

// foreignIPVS already holds a service at one address, created by someone
// else: creating it fails, updating it (the engine's takeover) works.
type foreignIPVS struct {
	countingIPVS
	at netip.Addr
}

func (f *foreignIPVS) CreateService(s ipvs.Service) error {
	if s.Address == f.at {
		return errors.New("file exists")
	}
	return f.countingIPVS.CreateService(s)
}

func owned(tenant, name, vip, owner string) *edgelbv1.VirtualService {
	return &edgelbv1.VirtualService{Tenant: tenant, Name: name, Vip: vip, Owner: owner,
		Ports: []*edgelbv1.Port{tcp(80, 30080)}, Backends: []*edgelbv1.Backend{{Address: "10.1.0.1", Weight: 1}}}
}

// Every log line about a VIP names the VIP and its tenant, so an operator
// can grep one tenant's or one VIP's history. A
// restart that adopted two VIPs, then passes that add, withdraw (service
// moved, service deleted, adopted VIP now owned elsewhere), take over a
// foreign IPVS service and fail to announce: every record that mentions a
// VIP anywhere has "vip" and the right "tenant".
func TestVIPLogLinesNameTenant(t *testing.T) {
	var buf logcapture.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	e, _, fa, _ := fakeEngine(t)
	const foreign = "10.9.0.3"
	e.ipvs = &foreignIPVS{at: netip.MustParseAddr(foreign)}
	e.log = log
	snd := &switchSender{}
	e.ann = announce.New(announce.Config{Burst: 2, BurstInterval: 10 * time.Millisecond, RepeatInterval: 20 * time.Millisecond}, snd, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.ann.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	// As Open leaves it after adopting two addresses from programmed.json:
	// on the interface, re-announced, tenant not known yet.
	adoptedMine, adoptedMoved := netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.9.0.2")
	e.unlabelled = map[netip.Addr]bool{}
	for _, a := range []netip.Addr{adoptedMine, adoptedMoved} {
		fa.on[a], e.vips[a], e.unlabelled[a] = true, true, true
		e.ann.Added(a, "")
	}
	snd.mu.Lock()
	snd.fail = true // from here on every announcement fails, and is logged
	snd.mu.Unlock()

	want := map[string]string{ // VIP → tenant
		"10.9.0.1": "acme", "10.9.0.2": "globex", foreign: "acme", "2001:db8::5": "initech", "10.9.0.4": "hooli",
	}
	a1 := owned("acme", "a1", "10.9.0.1", "me")
	g1 := owned("globex", "g1", "10.9.0.2", "other")
	a2 := owned("acme", "a2", foreign, "me")
	i1 := owned("initech", "i1", "2001:db8::5", "me")
	h1 := owned("hooli", "h1", "10.9.0.4", "me")
	if err := e.Reconcile(context.Background(), []*edgelbv1.VirtualService{a1, g1, a2, i1, h1}, "me"); err != nil {
		t.Fatal(err)
	}
	// Wait for repeats of the adopted VIP, which now know its tenant.
	waitLogged(t, &buf, func(rec map[string]any) bool {
		return rec["msg"] == "announce VIP" && rec["vip"] == "10.9.0.1" && rec["kind"] == "repeat"
	})
	// a2 moves to another member, i1 is deleted.
	a2moved := owned("acme", "a2", foreign, "other")
	if err := e.Reconcile(context.Background(), []*edgelbv1.VirtualService{a1, g1, a2moved, h1}, "me"); err != nil {
		t.Fatal(err)
	}
	// And every VIP goes (fenced): h1 withdrawn with the others.
	if err := e.Reconcile(context.Background(), []*edgelbv1.VirtualService{a1, g1, a2moved, h1}, ""); err != nil {
		t.Fatal(err)
	}

	recs, raw := records(t, &buf)
	seen := map[string]int{}
	for i, rec := range recs {
		named := ""
		for v := range want {
			if strings.Contains(raw[i], `"`+v) || strings.Contains(raw[i], "/"+v+":") {
				named = v
			}
		}
		vip, hasVIP := rec["vip"].(string)
		if !hasVIP && named == "" {
			continue
		}
		msg, _ := rec["msg"].(string)
		seen[msg]++
		if !hasVIP {
			t.Errorf("names VIP %s without a vip key: %s", named, raw[i])
			continue
		}
		if tenant, ok := rec["tenant"].(string); !ok || tenant != want[vip] {
			t.Errorf("tenant %q, want %q: %s", rec["tenant"], want[vip], raw[i])
		}
	}
	for msg, min := range map[string]int{
		"VIP added and announced": 3, // 10.9.0.3, 2001:db8::5, 10.9.0.4; none for the adopted
		"VIP withdrawn":           5, // 10.9.0.2 (adopted, owned elsewhere); 10.9.0.3, 2001:db8::5; 10.9.0.1, 10.9.0.4
		"announce VIP":            1,
		"took over an existing IPVS service not created by lbd": 1,
	} {
		if seen[msg] < min {
			t.Errorf("%d %q lines with a VIP, want at least %d (seen: %v)", seen[msg], msg, min, seen)
		}
	}
}

func waitLogged(t *testing.T, buf *logcapture.Buffer, match func(map[string]any) bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		recs, _ := records(t, buf)
		for _, r := range recs {
			if match(r) {
				return
			}
		}
	}
	t.Fatal("timed out waiting for a log line")
}
