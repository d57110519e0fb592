package daemon

import "github.com/edgelb/edgelb/raft/fsm"

func fsmKey(tenant, name string) fsm.Key { return fsm.Key{Tenant: tenant, Name: name} }
