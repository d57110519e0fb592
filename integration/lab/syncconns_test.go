package lab

import (
	"net/netip"
	"testing"
)

func TestParseSyncedConns(t *testing.T) {
	in := `Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Origin Expires
TCP 0A000064 A65A 0A0000D2 0050 0A000016 7530 ESTABLISHED SYNC       890
TCP 0A000064 A65B 0A0000D2 0050 0A000016 7530 ESTABLISHED LOCAL      890
TCP fd00::100 A65C fd00::210 0050 fd00::22 7530 ESTABLISHED SYNC        12
`
	got, err := parseSyncedConns(in)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.AddrPort{netip.MustParseAddrPort("10.0.0.100:42586"), netip.MustParseAddrPort("[fd00::100]:42588")}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("%s missing from %v", w, got)
		}
	}
	if _, err := parseSyncedConns("header\nTCP 0A000064 A65A\n"); err == nil {
		t.Error("a short line was accepted")
	}
}
