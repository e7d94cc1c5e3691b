# Gateway authorization: who is calling (API key, looked up by its SHA-256) and whether their
# role grants this method on this path. Runs when Envoy's gateway listener sets the ext_authz
# context extension policy=gateway; nothing the caller sends can select it.
#
# An allowed request carries the caller's identity to agentd in headers OPA sets (the gateway
# strips every x-agentd-* header a caller sends): client id, role, scope (`all` or `own`: whose
# sandboxes the client sees) and the sandbox tiers its role may create (sorted, comma-separated,
# "" for none). agentd enforces scope and tiers; the decision is OPA's, made from roles.yaml.
# The header names come from the bundle data (agentd's contract), never spelt here.
package agentd.gateway

import data.agentd.config.gateway as cfg
import data.agentd.lib.paths

http := input.attributes.request.http

headers := object.get(http, "headers", {})

path := paths.normalize(object.get(http, "path", ""))

# Where a key may come from. A key in the query string is never read (it would end up in logs).
key_sources contains "x-api-key" if "x-api-key" in object.keys(headers)

key_sources contains "authorization" if {
	"authorization" in object.keys(headers)
	startswith(lower(headers.authorization), "bearer ")
}

api_key := headers["x-api-key"] if key_sources == {"x-api-key"}

api_key := substring(headers.authorization, 7, -1) if key_sources == {"authorization"}

# Lookup by hash: one map access, whatever the number of keys.
client := cfg.keys[crypto.sha256(api_key)]

role := cfg.roles[client.role]

# A key rotated away (npm run key -- rotate) works until the end of its grace period.
key_expired if time.now_ns() >= time.parse_rfc3339_ns(client.not_after)

# Rules of the caller's role that grant this path.
path_rules contains rule if {
	some rule in role.rules
	some pattern in rule.patterns
	paths.matches(path.segments, pattern)
}

method_allowed if {
	some rule in path_rules
	rule.methods[http.method]
}

# Only an explicit `all` widens the scope; anything else (absent, misspelt) is `own`.
scope := "all" if role.scope == "all"

else := "own"

sandbox_tiers := concat(",", sort(object.get(role, "sandbox_tiers", [])))

decision := deny(400, "invalid_path", "the request path is not a valid path") if {
	not path.ok
} else := deny(401, "ambiguous_api_key", "send the API key in one header only: x-api-key or Authorization: Bearer") if {
	count(key_sources) > 1
} else := deny(401, "missing_api_key", "send your API key in the x-api-key header") if {
	count(key_sources) == 0
} else := deny(401, "invalid_api_key", "the API key is not valid") if {
	not client
} else := deny(401, "expired_api_key", sprintf("this API key was replaced by a new one; its grace period ended at %s", [client.not_after])) if {
	key_expired
} else := deny(403, "disabled_api_key", "this API key is disabled") if {
	not client.enabled
} else := deny(403, "forbidden_route", sprintf("role %q may not call %s", [client.role, path.path])) if {
	count(path_rules) == 0
} else := deny(403, "method_not_allowed", sprintf("role %q may not use %s on %s", [client.role, http.method, path.path])) if {
	not method_allowed
} else := {
	"allowed": true,
	"upstream_headers": {
		cfg.identity_headers.client_id: client.id,
		cfg.identity_headers.client_role: client.role,
		cfg.identity_headers.client_scope: scope,
		cfg.identity_headers.sandbox_tiers: sandbox_tiers,
	},
	"remove_headers": ["x-api-key", "authorization"],
	"metadata": {
		"policy": "gateway",
		"client_id": client.id,
		"role": client.role,
		"tier": client.tier,
	},
}

deny(status, reason, message) := {
	"allowed": false,
	"status": status,
	"reason": reason,
	"message": message,
	"metadata": object.union({"policy": "gateway", "reason": reason}, identity),
}

# On a denial the logs still say who was refused, when the key was valid.
identity := {"client_id": client.id} if client

else := {}
