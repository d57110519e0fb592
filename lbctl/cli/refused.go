package cli

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"

	"github.com/edgelb/edgelb/internal/apimd"
)

// refusedReason is the reason a member gave for refusing to answer from its
// replica (apimd.ReasonNoLeader, ...), or "" when err is not such a refusal.
// It reads the ErrorInfo detail, never the message.
func refusedReason(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == apimd.ErrorDomain {
			switch info.GetReason() {
			case apimd.ReasonNoLeader, apimd.ReasonNotCaughtUp, apimd.ReasonRemovedMember:
				return info.GetReason()
			}
		}
	}
	return ""
}
