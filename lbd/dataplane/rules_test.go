package dataplane

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/edgelb/edgelb/lbd/dataplane/nftrules"
)

func TestIPTablesFallback(t *testing.T) {
	refused := fmt.Errorf("create nftables table inet edgelb: %w: %w", nftrules.ErrUnsupported, errors.New("address family not supported"))
	timedOut := fmt.Errorf("create nftables table inet edgelb: %w", os.ErrDeadlineExceeded)
	ruleRefused := errors.New("nftables rules: operation not supported")
	for _, c := range []struct {
		mode string
		err  error
		want bool
	}{
		{"auto", refused, true},
		{"", refused, true}, // auto is the default
		{"auto", timedOut, false},
		{"auto", ruleRefused, false},
		{"nftables", refused, false}, // asked for by name: no silent iptables
		{"none", refused, false},
	} {
		if got := iptablesFallback(c.mode, c.err); got != c.want {
			t.Errorf("iptablesFallback(%q, %v) = %v, want %v", c.mode, c.err, got, c.want)
		}
	}
}
