# Egress authorization: may this sandbox call this service with this method on this path?
# Envoy's egress listener sets the context extensions (contextExtensions: the plugin hands the
# CheckRequest to Rego with protobuf JSON names) policy=egress and service=<its virtual
# host's service>, and hands over the claims of the sandbox token it has already verified
# (jwt_authn). The caller's headers never name the sandbox, its tier or the service.
#
# Revocation: a token is valid until its exp, but a sandbox can end earlier (terminated). agentd
# serves the set of active sandboxes as a second OPA bundle (root `sandboxes`, polled by OPA with
# long polling, so a change is in force within a second): data.sandboxes.active is an object
# keyed by sandbox id ({"tier": ..., "exp": epoch seconds}). A token whose sandbox is not in it
# is refused. Without the registry (agentd never answered, or it served something else) nothing
# is allowed: fail closed.
#
# The order of the checks, first failure wins:
#   1. who is calling: a verified token (401 missing_sandbox_token), with a numeric exp
#      (401 token_without_expiry: jwt_authn accepts a token without exp, which would never
#      expire), not expired (401 token_expired);
#   2. is that sandbox still alive: the registry is loaded (503 sandbox_registry_unavailable,
#      a platform fault, not the caller's) and lists it (401 sandbox_not_active);
#   3. what it calls: a known service (404 unknown_service), a known tier (403 unknown_tier)
#      that grants the service (403 service_not_allowed);
#   4. how it calls it: a valid path (400 invalid_path), an allowed method (403
#      method_not_allowed) and path (403 path_not_allowed).
# Identity comes first so that a revoked or expired sandbox learns nothing about services,
# tiers or paths; request details come last.
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

# A helper rule, so that `not` also holds when exp is absent (`not is_number(claims.exp)` would
# be undefined, not true, for a missing exp).
numeric_exp if is_number(claims.exp)

expired if claims.exp * 1000000000 <= time.now_ns()

# The registry of active sandboxes (agentd's bundle). Undefined when it is not loaded.
registry := data.sandboxes.active if is_object(data.sandboxes.active)

# One map lookup, whatever the number of sandboxes.
active if registry[sandbox_id]

decision := deny(401, "missing_sandbox_token", "a verified sandbox token is required") if {
	not sandbox_id
} else := deny(401, "token_without_expiry", "the sandbox token has no expiry (exp)") if {
	not numeric_exp
} else := deny(401, "token_expired", "the sandbox token has expired") if {
	expired
} else := deny(503, "sandbox_registry_unavailable", "the registry of active sandboxes is not loaded; try again") if {
	not registry
} else := deny(401, "sandbox_not_active", "the sandbox was terminated, has expired or is unknown") if {
	not active
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
