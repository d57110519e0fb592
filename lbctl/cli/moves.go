package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgelb/edgelb/lbctl/output"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

func (a *app) memberDrainCmd() *cobra.Command {
	var undo, wait bool
	var waitTimeout time.Duration
	c := &cobra.Command{
		Use:   "drain ID",
		Short: "Hand a member's VIPs to the others and give it no new ones (planned maintenance)",
		Long: `Drain marks the member draining: the leader moves each of its VIPs to another
member, which takes over the address while connection sync keeps established
connections. The member stays in the raft cluster. Undo with --undo when the
maintenance is over; VIPs do not move back by themselves (ownership is sticky).`,
		Example: `  lbctl member drain edge2 --wait     # returns once edge2 owns no VIP
  lbctl member drain edge2 --undo`,
		Args: cobra.ExactArgs(1),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			if err := positive("--wait-timeout", waitTimeout); err != nil {
				return err
			}
			conn, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			ctx, cancel := a.rpcCtx(cmd)
			defer cancel()
			resp, err := conn.Cluster.DrainMember(ctx, &edgelbv1.DrainMemberRequest{Id: args[0], Undrain: undo})
			if err != nil {
				return err
			}
			if wait && !undo {
				deadline := time.Now().Add(waitTimeout)
				for {
					lctx, lcancel := a.rpcCtx(cmd)
					list, err := conn.VirtualServices.ListVirtualServices(lctx, &edgelbv1.ListVirtualServicesRequest{})
					lcancel()
					if err != nil {
						return err
					}
					left := 0
					for _, vs := range list.Services {
						if vs.Owner == args[0] {
							left++
						}
					}
					if left == 0 {
						break
					}
					if time.Now().After(deadline) {
						return fmt.Errorf("member %s still owns %d services after %s", args[0], left, waitTimeout)
					}
					fmt.Fprintf(a.stderr, "waiting: %s still owns %d services\n", args[0], left)
					time.Sleep(500 * time.Millisecond)
				}
			}
			if a.format.Machine() {
				return output.Message(a.stdout, a.format, resp.Member)
			}
			fmt.Fprintf(a.stdout, "member %s is %s\n", args[0], stateName(resp.Member.GetState()))
			return nil
		}),
	}
	c.Flags().BoolVar(&undo, "undo", false, "return a drained member to service")
	c.Flags().BoolVar(&wait, "wait", false, "wait until the member owns no VIP")
	c.Flags().DurationVar(&waitTimeout, "wait-timeout", 2*time.Minute, "how long --wait waits")
	return c
}

func (a *app) vipMoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "move VIP MEMBER",
		Short: "Hand a VIP (every service on that address) to another member",
		Long: `Move is a planned handover: the new owner adds the address and announces it,
the old one withdraws it, and connection sync keeps established connections.`,
		Example: `  lbctl vip move 192.0.2.10 edge3`,
		Args:    cobra.ExactArgs(2),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			conn, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			ctx, cancel := a.rpcCtx(cmd)
			defer cancel()
			resp, err := conn.VirtualServices.MoveVIP(ctx, &edgelbv1.MoveVIPRequest{Vip: args[0], Member: args[1]})
			if err != nil {
				return err
			}
			if a.format.Machine() {
				return output.List(a.stdout, a.format, resp.Services)
			}
			fmt.Fprintf(a.stdout, "VIP %s (%d services) moved to %s\n", args[0], len(resp.Services), args[1])
			return nil
		}),
	}
}
