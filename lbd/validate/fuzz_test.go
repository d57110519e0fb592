package validate

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/ipam"
)

// checkErr asserts the validators' contract for any refusal: InvalidArgument
// with "field: what to fix".
func checkErr(t *testing.T, err error) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument {
		t.Fatalf("refusal is not InvalidArgument: %v", err)
	}
	field, _, found := cutField(st.Message())
	if !found || field == "" {
		t.Fatalf("refusal %q does not start with a field", st.Message())
	}
}

func cutField(msg string) (field, rest string, ok bool) {
	for i := 0; i+1 < len(msg); i++ {
		if msg[i] == ':' && msg[i+1] == ' ' {
			return msg[:i], msg[i+2:], true
		}
	}
	return "", "", false
}

func FuzzVirtualService(f *testing.F) {
	f.Add("web", "", "", "", "", "", uint32(80), uint32(0), int32(0), uint32(443), "192.0.2.1", uint32(30080), uint32(0), int32(0), int32(0), int32(0), uint32(0), int32(0), "", int64(0), int64(0), "10.0.0.0/8", "app", "web")
	f.Add("web", "team-a", "192.0.2.10", "lan", "k", "edge-1", uint32(80), uint32(30080), int32(1), uint32(80), "10.0.0.1", uint32(0), uint32(5), int32(2), int32(1), int32(1), uint32(300), int32(2), "/healthz", int64(time.Second), int64(time.Millisecond*500), " 0.0.0.0/0 ", "example.com/app", "")
	f.Add("six", "t", "2001:DB8::1", "", "", "", uint32(53), uint32(0), int32(2), uint32(53), "2001:db8::2", uint32(53), uint32(65535), int32(6), int32(2), int32(0), uint32(0), int32(4), "", int64(0), int64(0), "2001:db8::/32", "", "")
	f.Add("x", "", "", "", "", "", uint32(80), uint32(0), int32(0), uint32(80), "192.0.2.1", uint32(0), uint32(0), int32(0), int32(2), int32(2), uint32(0), int32(0), "", int64(0), int64(0), "", "", "")
	f.Add("Bad", "", "::ffff:1.2.3.4", "", "", "", uint32(0), uint32(70000), int32(9), uint32(0), "127.0.0.1", uint32(0), uint32(70000), int32(-1), int32(7), int32(7), uint32(1<<30), int32(9), "x y", int64(-1), int64(1), "10.0.0.1/8", "-", "a b")
	f.Fuzz(func(t *testing.T, name, tenant, vip, pool, sharing, pinned string,
		port, backendPort uint32, protocol int32, port2 uint32,
		baddr string, bport, weight uint32, scheduler, mode, family int32,
		persist uint32, hcType int32, hcPath string, interval, timeout int64,
		srcRange, labelKey, labelValue string) {
		vs := &edgelbv1.VirtualService{
			Name: name, Tenant: tenant, Vip: vip, Pool: pool, SharingKey: sharing, PinnedMember: pinned,
			Ports: []*edgelbv1.Port{
				{Port: port, BackendPort: backendPort, Protocol: edgelbv1.Protocol(protocol)},
				{Port: port2, Protocol: edgelbv1.Protocol_PROTOCOL_UDP},
			},
			Backends:       []*edgelbv1.Backend{{Address: baddr, Port: bport, Weight: weight}},
			Scheduler:      edgelbv1.Scheduler(scheduler),
			ForwardingMode: edgelbv1.ForwardingMode(mode),
			IpFamily:       edgelbv1.IPFamily(family),
			Persistence:    &edgelbv1.Persistence{TimeoutSeconds: persist},
			HealthCheck: &edgelbv1.HealthCheck{
				Type: edgelbv1.HealthCheckType(hcType), Path: hcPath, Port: bport,
				Interval: durationpb.New(time.Duration(interval)), Timeout: durationpb.New(time.Duration(timeout)),
			},
			Owner: "m1", Generation: 3,
		}
		if srcRange != "" {
			vs.SourceRanges = []string{srcRange}
		}
		if labelKey != "" {
			vs.Labels = map[string]string{labelKey: labelValue}
		}
		if interval == 0 {
			vs.HealthCheck.Interval = nil
		}
		if timeout == 0 {
			vs.HealthCheck.Timeout = nil
		}
		if err := VirtualService(vs, DefaultLimits); err != nil {
			checkErr(t, err)
			return
		}
		// What passes is explicit and consistent.
		if vs.Tenant == "" || vs.Owner != "" || vs.Generation != 0 {
			t.Fatalf("accepted with tenant %q owner %q generation %d", vs.Tenant, vs.Owner, vs.Generation)
		}
		if vs.Scheduler == edgelbv1.Scheduler_SCHEDULER_UNSPECIFIED || vs.ForwardingMode == edgelbv1.ForwardingMode_FORWARDING_MODE_UNSPECIFIED {
			t.Fatalf("accepted with unspecified scheduler or mode: %v", vs)
		}
		want6 := vs.IpFamily == edgelbv1.IPFamily_IP_FAMILY_IPV6
		if vs.IpFamily != edgelbv1.IPFamily_IP_FAMILY_IPV4 && !want6 {
			t.Fatalf("accepted with family %v", vs.IpFamily)
		}
		if vs.Vip != "" {
			a, err := netip.ParseAddr(vs.Vip)
			if err != nil || a.Is6() != want6 || a.String() != vs.Vip {
				t.Fatalf("accepted VIP %q (family %v) is not canonical of its family", vs.Vip, vs.IpFamily)
			}
		}
		for _, p := range vs.Ports {
			if p.Port < 1 || p.Port > 65535 || p.BackendPort < 1 || p.BackendPort > 65535 || p.Protocol == edgelbv1.Protocol_PROTOCOL_UNSPECIFIED {
				t.Fatalf("accepted port %v", p)
			}
		}
		for _, b := range vs.Backends {
			a, err := netip.ParseAddr(b.Address)
			if err != nil || a.Is6() != want6 || b.Weight < 1 || b.Weight > 65535 || b.Health != nil {
				t.Fatalf("accepted backend %v of a %v service", b, vs.IpFamily)
			}
		}
		if vs.Persistence != nil && vs.Persistence.TimeoutSeconds == 0 {
			t.Fatal("accepted a zero persistence without clearing it")
		}
		// Validating the output again passes and changes nothing.
		again := proto.Clone(vs).(*edgelbv1.VirtualService)
		if err := VirtualService(again, DefaultLimits); err != nil {
			t.Fatalf("validated service is refused on a second pass: %v\n%v", err, vs)
		}
		if !proto.Equal(vs, again) {
			t.Fatalf("validation is not idempotent:\nfirst  %v\nsecond %v", vs, again)
		}
	})
}

// badForVIP reports whether VIP() would refuse some address in r. A pool is
// allocated from without further checks, so none may be.
func badForVIP(r ipam.Range) bool {
	special := []string{"127.0.0.0/8", "224.0.0.0/4", "169.254.0.0/16", "255.255.255.255/32", "0.0.0.0/32",
		"::1/128", "::/128", "ff00::/8", "fe80::/10"}
	for _, s := range special {
		p := netip.MustParsePrefix(s)
		sr, _ := ipam.ParseRange(p.Addr().String() + "-" + lastOf(p).String())
		if p.Addr().Is4() == r.First.Is4() && r.Overlaps(sr) {
			return true
		}
	}
	return false
}

func lastOf(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func FuzzAddressPool(f *testing.F) {
	f.Add("lan", "192.0.2.0/24", "2001:db8::/120", "team-a", false)
	f.Add("lan", " 192.0.2.10-192.0.2.20 ", "", "", true)
	f.Add("lan", "192.0.2.0/24", "192.0.2.5/32", "", false)
	f.Add("LAN", "10.0.0.0/8", "", "Team", false)
	f.Add("x", "127.0.0.1/32", "::1/128", "", false)
	f.Fuzz(func(t *testing.T, name, r1, r2, tenant string, manual bool) {
		p := &edgelbv1.AddressPool{Name: name, Ranges: []string{r1}, Manual: manual}
		if r2 != "" {
			p.Ranges = append(p.Ranges, r2)
		}
		if tenant != "" {
			p.Tenants = []string{tenant}
		}
		if err := AddressPool(p, DefaultLimits); err != nil {
			checkErr(t, err)
			return
		}
		parsed, err := ipam.ParsePool(p.Ranges)
		if err != nil {
			t.Fatalf("accepted pool does not parse: %v", err)
		}
		for i, r := range parsed.Ranges {
			if badForVIP(r) {
				t.Fatalf("accepted pool range %q (%s) holds addresses VIP() refuses", p.Ranges[i], r)
			}
		}
		again := proto.Clone(p).(*edgelbv1.AddressPool)
		if err := AddressPool(again, DefaultLimits); err != nil || !proto.Equal(p, again) {
			t.Fatalf("second validation: %v; %v → %v", err, p, again)
		}
	})
}

func FuzzHostPort(f *testing.F) {
	for _, s := range []string{"10.0.0.1:7701", "[2001:db8::1]:7701", "edge-1:7700", "edge-1:0", "edge-1:080", ":80", "a:b:80",
		"[fe80::1%eth0]:1", "EDGE.example.com:65535", "1.2.3.400:80", "host:+80", "", ":", "[::1]:", "[::%]]:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := HostPort("addr", s)
		if err != nil {
			checkErr(t, err)
			return
		}
		// Whatever passes is something net.Dial can take apart: a host and a port 1-65535.
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			t.Fatalf("HostPort accepted %q, which net.SplitHostPort refuses: %v", s, err)
		}
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || host == "" {
			t.Fatalf("HostPort accepted %q: host %q port %q", s, host, port)
		}
	})
}
