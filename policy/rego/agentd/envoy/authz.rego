# The entry point OPA's Envoy plugin queries (plugin config `path: agentd/envoy/authz/result`).
# It returns what the plugin expects: `allowed` (not `allow`), headers for upstream, headers
# to remove, dynamic metadata for rate limiting and access logs, and on a denial an HTTP status
# with a JSON body. Which policy runs comes from Envoy's own ext_authz context extensions.
package agentd.envoy.authz

import data.agentd.egress
import data.agentd.gateway

policy := object.get(input, ["attributes", "contextExtensions", "policy"], "")

decision := gateway.decision if policy == "gateway"

else := egress.decision if policy == "egress"

else := {
	"allowed": false,
	"status": 403,
	"reason": "unknown_policy",
	"message": "this listener is not bound to an agentd policy",
	"metadata": {"policy": policy, "reason": "unknown_policy"},
}

result := {
	"allowed": true,
	"headers": decision.upstream_headers,
	"request_headers_to_remove": decision.remove_headers,
	"dynamic_metadata": decision.metadata,
} if decision.allowed

result := {
	"allowed": false,
	"http_status": decision.status,
	"headers": {"content-type": "application/json"},
	"body": json.marshal({"error": {"code": decision.reason, "message": decision.message}}),
	"dynamic_metadata": decision.metadata,
} if not decision.allowed
