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
#
# As in gateway.rego, the allowed case comes first, as one body of positive conditions that
# holds exactly when none of the denials does, the path is looked up in the service's index of
# its allowed paths (policy/bundle.ts, compileRoutes), and the answer is in the plugin's shape.
package agentd.egress

import data.agentd.config.egress as cfg
import data.agentd.lib.answer
import data.agentd.lib.paths

http := input.attributes.request.http

service_id := input.attributes.contextExtensions.service

claims := input.attributes.metadataContext.filterMetadata["envoy.filters.http.jwt_authn"].sandbox

sandbox_id := claims.sub

# Read by the denials only: the allowed case reads the data where it needs it.
service := cfg.services[service_id]

tier := cfg.tiers[claims.tier]

# A helper rule, so that `not` also holds without a method (`not service.methods[http.method]`
# would be undefined, not true).
method_allowed if service.methods[http.method]

# Undefined for a path that is refused (or absent).
segments := paths.segments(http.path)

# Some allowed pattern with as many segments as the path (exact) or at most as many (prefix)
# has the path's segments at its literal positions (`keep`).
path_allowed if {
	some g in cfg.services[service_id].routes.exact[count(segments)]
	g.keys[concat("/", [segments[i] | some i in g.keep])]
}

path_allowed if {
	some g in cfg.services[service_id].routes.prefix
	g.min <= count(segments)
	g.keys[concat("/", [segments[i] | some i in g.keep])]
}

# A helper rule, so that `not` also holds when exp is absent (`not is_number(claims.exp)` would
# be undefined, not true, for a missing exp).
numeric_exp if is_number(claims.exp)

expired if claims.exp * 1000000000 <= time.now_ns()

# Until when a decision holds (`cache_until_ns`: the OPA plugin's decision cache reuses it no
# longer; docs/toolchain/opa.md): the token's exp. Every decision from the expiry check on read
# the clock, and states it; earlier ones (no token, no exp) did not read it.
token_end := claims.exp * 1000000000 if numeric_exp

else := null

# The registry of active sandboxes (agentd's bundle). Undefined when it is not loaded.
registry := data.sandboxes.active if is_object(data.sandboxes.active)

# One map lookup, whatever the number of sandboxes.
active if registry[sandbox_id]

decision := {
	"allowed": true,
	"cache_until_ns": claims.exp * 1000000000,
	"headers": {},
	"request_headers_to_remove": ["x-agentd-sandbox-token"],
	"dynamic_metadata": {
		"policy": "egress",
		"sandbox_id": sandbox_id,
		"tier": claims.tier,
		"service": service_id,
	},
} if {
	# numeric_exp, not expired and active, spelt out (one rule evaluation less each).
	is_number(claims.exp)
	claims.exp * 1000000000 > time.now_ns()
	is_string(sandbox_id)
	data.sandboxes.active[sandbox_id]
	cfg.tiers[claims.tier].services[service_id]
	cfg.services[service_id].methods[http.method]
	path_allowed
} else := deny(401, "missing_sandbox_token", "a verified sandbox token is required") if {
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
	not segments
} else := deny(403, "method_not_allowed", sprintf("%s does not allow %s", [service_id, method])) if {
	not method_allowed
} else := deny(403, "path_not_allowed", sprintf("%s does not allow the path %s", [service_id, paths.path(segments)])) if {
	not path_allowed
}

# The method as denials spell it. A request without one (which Envoy never sends) is refused
# like any other method the service does not allow.
method := object.get(http, "method", "(no method)")

deny(status, reason, message) := object.union(
	answer.deny(status, reason, message, object.union({"policy": "egress", "reason": reason, "service": service_id}, identity)),
	{"cache_until_ns": token_end},
)

identity := {"sandbox_id": sandbox_id, "tier": claims.tier} if sandbox_id

else := {}
