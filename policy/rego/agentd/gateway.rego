# Gateway authorization: who is calling (API key, looked up by its SHA-256) and whether their
# role grants this method on this path. Runs when Envoy's gateway listener sets the ext_authz
# context extension policy=gateway; nothing the caller sends can select it.
#
# An allowed request carries the caller's identity to agentd in headers OPA sets (the gateway
# strips every x-agentd-* header a caller sends): client id, role, scope (`all` or `own`: whose
# sandboxes the client sees) and the sandbox tiers its role may create (sorted, comma-separated,
# "" for none). agentd enforces scope and tiers; the decision is OPA's, made from roles.yaml.
# The bundle renders these headers into each key's entry (policy/bundle.ts, with the header
# names of agentd's contract), so they are never spelt here.
#
# Every decision is evaluated on every request, so the rules are written to be cheap: the
# allowed case first, as one body of positive conditions (it holds exactly when none of the
# denials below does); the route looked up in the role's index (policy/bundle.ts,
# compileRoutes) rather than matched pattern by pattern; data read where it is used rather than
# copied into rules; the clock read only for a key with an end; the answer built in the shape
# the plugin reads (envoy/authz.rego) rather than reshaped there.
package agentd.gateway

import data.agentd.config.gateway as cfg
import data.agentd.lib.answer
import data.agentd.lib.paths

http := input.attributes.request.http

# Undefined for a path that is refused (or absent).
segments := paths.segments(http.path)

# Where a key may come from. A key in the query string is never read (it would end up in logs).
sent_x_api_key if http.headers["x-api-key"] = _

bearer := substring(http.headers.authorization, 7, -1) if startswith(lower(http.headers.authorization), "bearer ")

# The key, when exactly one header sends one.
api_key := http.headers["x-api-key"] if {
	not bearer
} else := bearer if {
	not sent_x_api_key
}

# Lookup by hash: one map access, whatever the number of keys.
client := cfg.keys[crypto.sha256(api_key)]

# A key rotated away (npm run key -- rotate) works until the end of its grace period.
key_expired if {
	end := time.parse_rfc3339_ns(client.not_after)
	time.now_ns() >= end
}

# Until when a decision holds (`cache_until_ns`: the OPA plugin's decision cache reuses it no
# longer; docs/toolchain/opa.md): the end of the key's grace period, or null (no end) for a key
# that has none. A decision that read the clock must state it, or it is not cached.
key_end := end if {
	end := time.parse_rfc3339_ns(client.not_after)
} else := null

# The role grants the method on the path: some exact pattern with as many segments as the path,
# or some prefix pattern with at most as many, whose literal segments are the path's at the same
# positions (`keep`), with the method.
method_allowed if {
	some g in cfg.roles[client.role].routes.exact[count(segments)]
	g.keys[concat("/", [segments[i] | some i in g.keep])][http.method]
}

method_allowed if {
	some g in cfg.roles[client.role].routes.prefix
	g.min <= count(segments)
	g.keys[concat("/", [segments[i] | some i in g.keep])][http.method]
}

# The same, whatever the method.
route_matched if {
	some g in cfg.roles[client.role].routes.exact[count(segments)]
	g.keys[concat("/", [segments[i] | some i in g.keep])]
}

route_matched if {
	some g in cfg.roles[client.role].routes.prefix
	g.min <= count(segments)
	g.keys[concat("/", [segments[i] | some i in g.keep])]
}

# Allowed: a key that is valid, enabled and not expired, whose role grants the method on the
# path (which implies a valid path and exactly one key header). Otherwise the first denial that
# applies, in this order.
decision := {
	"allowed": true,
	"cache_until_ns": key_end,
	"headers": client.upstream_headers,
	"request_headers_to_remove": ["x-api-key", "authorization"],
	"dynamic_metadata": {
		"policy": "gateway",
		"client_id": client.id,
		"role": client.role,
		"tier": client.tier,
	},
} if {
	client.enabled
	not key_expired
	method_allowed
} else := deny(400, "invalid_path", "the request path is not a valid path") if {
	not segments
} else := deny(401, "ambiguous_api_key", "send the API key in one header only: x-api-key or Authorization: Bearer") if {
	sent_x_api_key
	bearer
} else := deny(401, "missing_api_key", "send your API key in the x-api-key header") if {
	not sent_x_api_key
	not bearer
} else := deny(401, "invalid_api_key", "the API key is not valid") if {
	not client
} else := deny(401, "expired_api_key", sprintf("this API key was replaced by a new one; its grace period ended at %s", [client.not_after])) if {
	key_expired
} else := deny(403, "disabled_api_key", "this API key is disabled") if {
	not client.enabled
} else := deny(403, "forbidden_route", sprintf("role %q may not call %s", [client.role, paths.path(segments)])) if {
	not route_matched
} else := deny(403, "method_not_allowed", sprintf("role %q may not use %s on %s", [client.role, method, paths.path(segments)])) if {
	not method_allowed
}

# The method as denials spell it. A request without one (which Envoy never sends) is refused
# like any other method the role lacks.
method := object.get(http, "method", "(no method)")

deny(status, reason, message) := answer.deny(status, reason, message, object.union({"policy": "gateway", "reason": reason}, identity))

# On a denial the logs still say who was refused, when the key was valid.
identity := {"client_id": client.id} if client

else := {}
