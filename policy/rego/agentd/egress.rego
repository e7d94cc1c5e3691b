# Egress authorization: may this sandbox call this service with this method on this path?
# Envoy's egress listener sets the context extensions (contextExtensions: the plugin hands the
# CheckRequest to Rego with protobuf JSON names) policy=egress and service=<its virtual
# host's service>, and hands over the claims of the sandbox token it has already verified
# (jwt_authn). The caller's headers never name the sandbox, its tier or the service.
package agentd.egress

import data.agentd.config.egress as cfg
import data.agentd.lib.paths

http := input.attributes.request.http

service_id := input.attributes.contextExtensions.service

service := cfg.services[service_id]

claims := input.attributes.metadataContext.filterMetadata["envoy.filters.http.jwt_authn"].sandbox

sandbox_id := claims.sub

tier := cfg.tiers[claims.tier]

path := paths.normalize(object.get(http, "path", ""))

path_allowed if {
	some pattern in service.patterns
	paths.matches(path.segments, pattern)
}

expired if claims.exp * 1000000000 <= time.now_ns()

decision := deny(401, "missing_sandbox_token", "a verified sandbox token is required") if {
	not sandbox_id
} else := deny(401, "token_expired", "the sandbox token has expired") if {
	expired
} else := deny(404, "unknown_service", sprintf("no egress service %q", [service_id])) if {
	not service
} else := deny(403, "unknown_tier", sprintf("sandbox tier %q is not defined", [claims.tier])) if {
	not tier
} else := deny(403, "service_not_allowed", sprintf("tier %q may not call %s", [claims.tier, service_id])) if {
	not tier.services[service_id]
} else := deny(400, "invalid_path", "the request path is not a valid path") if {
	not path.ok
} else := deny(403, "method_not_allowed", sprintf("%s does not allow %s", [service_id, http.method])) if {
	not service.methods[http.method]
} else := deny(403, "path_not_allowed", sprintf("%s does not allow the path %s", [service_id, path.path])) if {
	not path_allowed
} else := {
	"allowed": true,
	"upstream_headers": {},
	"remove_headers": ["x-agentd-sandbox-token"],
	"metadata": {
		"policy": "egress",
		"sandbox_id": sandbox_id,
		"tier": claims.tier,
		"service": service_id,
	},
}

deny(status, reason, message) := {
	"allowed": false,
	"status": status,
	"reason": reason,
	"message": message,
	"metadata": object.union({"policy": "egress", "reason": reason, "service": service_id}, identity),
}

identity := {"sandbox_id": sandbox_id, "tier": claims.tier} if sandbox_id

else := {}
