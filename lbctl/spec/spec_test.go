package spec

import (
	"strings"
	"testing"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"google.golang.org/protobuf/proto"
)

func TestParsePort(t *testing.T) {
	tcp, udp, sctp := edgelbv1.Protocol_PROTOCOL_TCP, edgelbv1.Protocol_PROTOCOL_UDP, edgelbv1.Protocol_PROTOCOL_SCTP
	tests := []struct {
		in   string
		want *edgelbv1.Port
	}{
		{"tcp/80", &edgelbv1.Port{Protocol: tcp, Port: 80}},
		{"TCP/443:30443", &edgelbv1.Port{Protocol: tcp, Port: 443, BackendPort: 30443}},
		{"udp/53", &edgelbv1.Port{Protocol: udp, Port: 53}},
		{"sctp/9:65535", &edgelbv1.Port{Protocol: sctp, Port: 9, BackendPort: 65535}},
		{"8080", &edgelbv1.Port{Protocol: tcp, Port: 8080}},
		{"80:30080", &edgelbv1.Port{Protocol: tcp, Port: 80, BackendPort: 30080}},
		{"", nil}, {"tcp/", nil}, {"tcp/0", nil}, {"tcp/65536", nil}, {"icmp/80", nil},
		{"tcp/80:", nil}, {"tcp/80:0", nil}, {"tcp/-1", nil}, {"tcp/+80", nil}, {"tcp/ 80", nil},
		{"tcp/80:30080:1", nil}, {"tcp/udp/80", nil},
	}
	for _, tt := range tests {
		got, err := ParsePort(tt.in)
		if tt.want == nil {
			if err == nil {
				t.Errorf("ParsePort(%q) = %v, want error", tt.in, got)
			} else if !strings.Contains(err.Error(), "PROTO/PORT") {
				t.Errorf("ParsePort(%q) error %q does not show the syntax", tt.in, err)
			}
			continue
		}
		if err != nil || !proto.Equal(got, tt.want) {
			t.Errorf("ParsePort(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseBackend(t *testing.T) {
	tests := []struct {
		in   string
		want *edgelbv1.Backend
	}{
		{"10.0.0.5", &edgelbv1.Backend{Address: "10.0.0.5"}},
		{"10.0.0.5:30080", &edgelbv1.Backend{Address: "10.0.0.5", Port: 30080}},
		{"10.0.0.5:30080,weight=3", &edgelbv1.Backend{Address: "10.0.0.5", Port: 30080, Weight: 3}},
		{"10.0.0.5,drained", &edgelbv1.Backend{Address: "10.0.0.5", Drained: true}},
		{"10.0.0.5,weight=2,drained", &edgelbv1.Backend{Address: "10.0.0.5", Weight: 2, Drained: true}},
		{"2001:db8::5", &edgelbv1.Backend{Address: "2001:db8::5"}},
		{"[2001:DB8::5]", &edgelbv1.Backend{Address: "2001:db8::5"}},
		{"[2001:db8::5]:8443,weight=10", &edgelbv1.Backend{Address: "2001:db8::5", Port: 8443, Weight: 10}},
		{"", nil}, {"host.example:80", nil}, {"10.0.0.5:0", nil}, {"10.0.0.5:70000", nil},
		{"10.0.0.5,weight=0", nil}, {"10.0.0.5,weight=x", nil}, {"10.0.0.5,weight", nil},
		{"10.0.0.5,drained=true", nil}, {"10.0.0.5,drained,drained", nil}, {"10.0.0.5,bogus", nil},
		{"[10.0.0.5]:80", nil}, {"2001:db8::5:80:x", nil}, {"fe80::1%eth0", nil}, {"10.0.0.256", nil},
	}
	for _, tt := range tests {
		got, err := ParseBackend(tt.in)
		if tt.want == nil {
			if err == nil {
				t.Errorf("ParseBackend(%q) = %v, want error", tt.in, got)
			}
			continue
		}
		if err != nil || !proto.Equal(got, tt.want) {
			t.Errorf("ParseBackend(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseLabels(t *testing.T) {
	got, err := ParseLabels([]string{"app=web,env=prod", "empty=", "example.com/team=edge"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"app": "web", "env": "prod", "empty": "", "example.com/team": "edge"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("label %q = %q, want %q", k, got[k], v)
		}
	}
	for _, bad := range []string{"", "app", "=web", "a=b=c", "a b=c", "a=b c", "a=\x00", "app=web,"} {
		if _, err := ParseLabels([]string{bad}); err == nil {
			t.Errorf("ParseLabels(%q) succeeded, want error", bad)
		}
	}
}

func TestParseRange(t *testing.T) {
	good := map[string]string{
		"192.0.2.0/24":             "192.0.2.0/24",
		"192.0.2.10-192.0.2.20":    "192.0.2.10-192.0.2.20",
		"192.0.2.10-192.0.2.10":    "192.0.2.10-192.0.2.10",
		"2001:db8::/64":            "2001:db8::/64",
		"2001:DB8::1-2001:db8::ff": "2001:db8::1-2001:db8::ff",
	}
	for in, want := range good {
		if got, err := ParseRange(in); err != nil || got != want {
			t.Errorf("ParseRange(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "192.0.2.0", "192.0.2.0/33", "192.0.2.20-192.0.2.10", "192.0.2.1-2001:db8::1", "a-b"} {
		if _, err := ParseRange(bad); err == nil {
			t.Errorf("ParseRange(%q) succeeded, want error", bad)
		}
	}
}

func TestParsePersistence(t *testing.T) {
	good := map[string]uint32{"0": 0, "10800": 10800, "3h": 10800, "90m": 5400, "1m30s": 90}
	for in, want := range good {
		if got, err := ParsePersistence(in); err != nil || got != want {
			t.Errorf("ParsePersistence(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "1.5s", "abc", "-3h", "2000000h"} {
		if _, err := ParsePersistence(bad); err == nil {
			t.Errorf("ParsePersistence(%q) succeeded, want error", bad)
		}
	}
}

func TestEnums(t *testing.T) {
	if v, err := ParseScheduler("WRR"); err != nil || v != edgelbv1.Scheduler_SCHEDULER_WRR {
		t.Errorf("ParseScheduler(WRR) = %v, %v", v, err)
	}
	if _, err := ParseScheduler("fifo"); err == nil || !strings.Contains(err.Error(), "mh|rr|wrr|lc|wlc|sh") {
		t.Errorf("ParseScheduler(fifo) error = %v", err)
	}
	if v, err := ParseMode("dr"); err != nil || v != edgelbv1.ForwardingMode_FORWARDING_MODE_DR {
		t.Errorf("ParseMode(dr) = %v, %v", v, err)
	}
	if v, err := ParseFamily("ipv6"); err != nil || v != edgelbv1.IPFamily_IP_FAMILY_IPV6 {
		t.Errorf("ParseFamily(ipv6) = %v, %v", v, err)
	}
	if v, err := ParseHealthCheck("none"); err != nil || v != edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_NONE {
		t.Errorf("ParseHealthCheck(none) = %v, %v", v, err)
	}
	if v, err := ParseHealthCheck("sctp"); err != nil || v != edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_SCTP || HealthCheckName(v) != "sctp" {
		t.Errorf("ParseHealthCheck(sctp) = %v, %v", v, err)
	}
	if SchedulerName(0) != "mh" || ModeName(0) != "nat" || HealthCheckName(0) != "tcp" {
		t.Error("unspecified enums should name the server defaults")
	}
}

// The fuzz targets check that parsers never panic and that whatever they
// accept formats back to text that parses to the same value. Without -fuzz
// they run only the seeds, so they stay quick in `go test`.

func FuzzParsePort(f *testing.F) {
	for _, s := range []string{"tcp/80", "udp/53:30053", "80", "sctp/1:65535", "tcp/", "x/1", "tcp/80:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePort(s)
		if err != nil {
			return
		}
		if p.Port < 1 || p.Port > 65535 || p.BackendPort > 65535 {
			t.Fatalf("ParsePort(%q) accepted out-of-range %v", s, p)
		}
		again, err := ParsePort(FormatPort(p))
		if err != nil {
			t.Fatalf("round trip of %q via %q: %v", s, FormatPort(p), err)
		}
		if again.Protocol != p.Protocol || again.Port != p.Port {
			t.Fatalf("round trip of %q: %v != %v", s, again, p)
		}
	})
}

func FuzzParseBackend(f *testing.F) {
	for _, s := range []string{"10.0.0.5", "10.0.0.5:80,weight=2,drained", "[::1]:80", "::1", "a,b", "1.2.3.4,weight=99999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseBackend(s)
		if err != nil {
			return
		}
		again, err := ParseBackend(FormatBackend(b))
		if err != nil {
			t.Fatalf("round trip of %q via %q: %v", s, FormatBackend(b), err)
		}
		if !proto.Equal(again, b) {
			t.Fatalf("round trip of %q: %v != %v", s, again, b)
		}
	})
}

func FuzzParseLabel(f *testing.F) {
	for _, s := range []string{"app=web", "k=", "=v", "a=b=c", "a b=c", "example.com/x=y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, v, err := ParseLabel(s)
		if err != nil {
			return
		}
		k2, v2, err := ParseLabel(k + "=" + v)
		if err != nil || k2 != k || v2 != v {
			t.Fatalf("round trip of %q: %q=%q, %v", s, k2, v2, err)
		}
	})
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"192.0.2.0/24", "192.0.2.1-192.0.2.9", "::/0", "1-2", "-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRange(s)
		if err != nil {
			return
		}
		if again, err := ParseRange(r); err != nil || again != r {
			t.Fatalf("canonical form %q of %q is not stable: %q, %v", r, s, again, err)
		}
	})
}
