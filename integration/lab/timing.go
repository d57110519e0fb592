package lab

// GuestTiming is lbd's timing for a lab in the UML guest: one emulated CPU
// shared by three lbd, the nodes and the traffic. With lbd's LAN defaults
// (probes every 50 ms, lease 250 ms) the guest saw reconcile-loop gaps of
// 0.4–6 s under load, the fence withdraw a VIP whose owner was healthy, and
// clients get "no route to host" while no edge answered ARP for it (a CI run
// of the Kubernetes data-path e2e, 2026-12-05). Scenarios that measure
// failover pick their own profile (integration/ha); the rest use this one.
const GuestTiming = `raft:
  heartbeatTimeout: 1500ms
  electionTimeout: 1500ms
  leaderLeaseTimeout: 750ms
ownership:
  probeInterval: 200ms
  lease: 4s
  grace: 4500ms
`
