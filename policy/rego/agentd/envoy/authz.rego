# The entry point OPA's Envoy plugin queries (plugin config `path: agentd/envoy/authz/result`).
# It returns what the plugin expects: `allowed` (not `allow`), headers for upstream, headers
# to remove, dynamic metadata for rate limiting and access logs, and on a denial an HTTP status
# with a JSON body. Which policy runs comes from Envoy's own ext_authz context extensions.
# gateway.rego and egress.rego answer in this shape themselves (denials: lib/answer.rego).
package agentd.envoy.authz

import data.agentd.egress
import data.agentd.gateway
import data.agentd.lib.answer

policy := object.get(input, ["attributes", "contextExtensions", "policy"], "")

# The context extension read directly (not through `policy`, which only the fallback needs).
result := gateway.decision if input.attributes.contextExtensions.policy == "gateway"

else := egress.decision if input.attributes.contextExtensions.policy == "egress"

else := answer.deny(403, "unknown_policy", "this listener is not bound to an agentd policy", {"policy": policy, "reason": "unknown_policy"})
