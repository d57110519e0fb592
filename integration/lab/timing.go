package lab

import "time"

// GuestRaft is the raft timing of every lab in the UML guest: one emulated
// CPU shared by three lbd, the nodes and the traffic. With lbd's LAN
// defaults (500 ms heartbeat and election timeouts) the loaded guest saw
// repeated elections, and VIPs withdrawn and re-added, which has nothing to
// do with what the guest scenarios check. Each guest timing below starts
// with it and adds the ownership part its scenarios need.
const GuestRaft = `raft:
  heartbeatTimeout: 1500ms
  electionTimeout: 1500ms
  leaderLeaseTimeout: 750ms
`

// GuestTiming is lbd's timing for a lab in the UML guest. With lbd's LAN
// defaults (probes every 50 ms, lease 250 ms) the guest saw reconcile-loop
// gaps of 0.4–6 s under load, the fence withdraw a VIP whose owner was
// healthy, and clients get "no route to host" while no edge answered ARP for
// it (a CI run of the Kubernetes data-path e2e, 2026-12-05). Scenarios that
// measure failover pick their own profile (integration/ha); the rest use
// this one.
const GuestTiming = GuestRaft + `ownership:
  probeInterval: 200ms
  lease: 4s
  grace: 4500ms
`

// GuestLease is GuestTiming's ownership lease (keep the two equal): the
// bgp scenarios time a partitioned edge's withdrawal against it.
const GuestLease = 4 * time.Second
