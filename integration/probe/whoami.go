package probe

import (
	"bufio"
	"net"
	"strings"
	"time"

	"github.com/edgelb/edgelb/integration/netns"
)

// Whoami asks the nodeserver behind addr, over one TCP connection from the
// namespace ns ("" = the caller's), which source address it sees; the answer
// is "NODE ADDR" (integration/cmd/nodeserver). The dial may take 2 s, the
// exchange after it timeout.
func Whoami(ns, addr string, timeout time.Duration) (string, error) {
	var line string
	err := netns.Do(ns, func() error {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		r := bufio.NewReader(c)
		if _, err := r.ReadString('\n'); err != nil { // the greeting
			return err
		}
		if _, err := c.Write([]byte("whoami\n")); err != nil {
			return err
		}
		line, err = r.ReadString('\n')
		return err
	})
	return strings.TrimSpace(line), err
}
