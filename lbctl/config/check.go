package config

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

var (
	contextNameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)
	hostLabelRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$`)
)

// CheckContextName refuses a name that could not be typed back as
// --context NAME: empty, spaces, control characters, shell punctuation.
func CheckContextName(name string) error {
	if !contextNameRE.MatchString(name) || len(name) > 253 {
		return fmt.Errorf("context name %q: use letters, digits, '.', '_' and '-', starting and ending with a letter or digit", name)
	}
	return nil
}

// CheckEndpoints refuses an endpoint that is not HOST:PORT, so a typo is
// reported where it was typed instead of as an unreachable cluster later.
func CheckEndpoints(eps []string) error {
	if len(eps) == 0 {
		return fmt.Errorf("no endpoints given: --endpoints HOST:PORT[,HOST:PORT...]")
	}
	for _, ep := range eps {
		if err := checkEndpoint(ep); err != nil {
			return fmt.Errorf("endpoint %q: %w (want HOST:PORT, e.g. lb1:7700, 10.0.0.11:7700 or [2001:db8::11]:7700)", ep, err)
		}
	}
	return nil
}

func checkEndpoint(ep string) error {
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return fmt.Errorf("no port, or a port in the wrong place")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	if host == "" {
		return fmt.Errorf("no host")
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if len(host) > 253 {
		return fmt.Errorf("host name longer than 253 characters")
	}
	for _, label := range strings.Split(strings.TrimSuffix(host, "."), ".") {
		if len(label) > 63 || !hostLabelRE.MatchString(label) {
			return fmt.Errorf("host %q is neither an IP address nor a DNS name", host)
		}
	}
	return nil
}
