// Command fakelbd serves the in-memory fake of lbd's VirtualService and
// AddressPool APIs with lbd's command line, so the Kubernetes integration test
// can run end to end before (or without) the real lbd. Only --api-addr matters.
package main

import (
	"flag"
	"log"
	"net"

	"github.com/edgelb/edgelb/cloudprovider/internal/fakelbd"
)

func main() {
	addr := flag.String("api-addr", "127.0.0.1:7700", "gRPC API address")
	flag.String("id", "", "ignored")
	flag.String("data-dir", "", "ignored")
	flag.String("raft-addr", "", "ignored")
	flag.String("data-plane", "", "ignored")
	flag.Parse()
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("fake lbd serving on %s", *addr)
	log.Fatal(fakelbd.Serve(lis, fakelbd.New()))
}
