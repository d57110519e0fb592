package metrics

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

type drops struct {
	n   map[netip.Addr]uint64
	err error
}

func (d *drops) SourceRangeDrops(context.Context) (map[netip.Addr]uint64, error) { return d.n, d.err }

func TestSourceRangeDrops(t *testing.T) {
	m := New("test")
	src := &drops{n: map[netip.Addr]uint64{netip.MustParseAddr("192.0.2.1"): 7, netip.MustParseAddr("2001:db8::1"): 2}}
	if err := m.RegisterSourceRanges(src); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP edgelb_source_range_dropped_packets_total Packets to the VIP dropped because their source is outside the source ranges of the service on that port (counted on every member; only the owner receives traffic).
# TYPE edgelb_source_range_dropped_packets_total counter
edgelb_source_range_dropped_packets_total{vip="192.0.2.1"} 7
edgelb_source_range_dropped_packets_total{vip="2001:db8::1"} 2
# HELP edgelb_source_range_up 1 when the last read of the source-range rule counters succeeded.
# TYPE edgelb_source_range_up gauge
edgelb_source_range_up 1
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "edgelb_source_range_dropped_packets_total", "edgelb_source_range_up"); err != nil {
		t.Error(err)
	}
	src.err = errors.New("iptables-legacy-save: exit status 1")
	want = `
# HELP edgelb_source_range_up 1 when the last read of the source-range rule counters succeeded.
# TYPE edgelb_source_range_up gauge
edgelb_source_range_up 0
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "edgelb_source_range_dropped_packets_total", "edgelb_source_range_up"); err != nil {
		t.Error(err)
	}
}
