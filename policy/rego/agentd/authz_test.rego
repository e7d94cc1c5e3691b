package agentd.envoy.authz_test

import data.agentd.envoy.authz

# Test data in the shape policy/bundle.ts renders (renderPolicyData): each key with the identity
# headers of its client, each role and service with its patterns compiled into `routes`
# (compileRoutes). The fields only the previous policy read (rules, patterns, scope,
# sandbox_tiers, identity_headers) are left out: this policy must not need them.
config := {
	"gateway": {
		"keys": {
			crypto.sha256("key-admin"): key("admin", "admin", "unlimited", true, "all", "admin,default,standard"),
			crypto.sha256("key-reader"): key("reader", "reader", "default", true, "own", ""),
			crypto.sha256("key-off"): key("off", "admin", "default", false, "all", "admin,default,standard"),
			crypto.sha256("key-op"): key("ci", "operator", "standard", true, "own", "default,standard"),
			# Client ci's key before a rotation: valid until its grace period ends.
			crypto.sha256("key-op-previous"): object.union(key("ci", "operator", "standard", true, "own", "default,standard"), {"not_after": "2999-01-01T00:00:00Z"}),
			crypto.sha256("key-op-retired"): object.union(key("ci", "operator", "standard", true, "own", "default,standard"), {"not_after": "2000-01-01T00:00:00Z"}),
			# A client whose role the data lacks: every route is forbidden.
			crypto.sha256("key-ghost"): key("ghost", "ghost", "default", true, "own", ""),
			crypto.sha256("key-empty"): key("empty", "empty", "default", true, "own", ""),
		},
		"roles": {
			# /api/v1/** for GET, POST, DELETE.
			"admin": {"routes": {
				"exact": [],
				"prefix": [{"min": 2, "keep": [0, 1], "keys": {"api/v1": {"GET": true, "POST": true, "DELETE": true}}}],
			}},
			# GET /api/v1/status, POST /api/v1/sandboxes/*/intents.
			"operator": {"routes": {
				"exact": [
					[], [], [],
					[{"keep": [0, 1, 2], "keys": {"api/v1/status": {"GET": true}}}],
					[],
					[{"keep": [0, 1, 2, 4], "keys": {"api/v1/sandboxes/intents": {"POST": true}}}],
				],
				"prefix": [],
			}},
			# GET /api/v1/status, /api/v1/sandboxes/**.
			"reader": {"routes": {
				"exact": [[], [], [], [{"keep": [0, 1, 2], "keys": {"api/v1/status": {"GET": true}}}]],
				"prefix": [{"min": 3, "keep": [0, 1, 2], "keys": {"api/v1/sandboxes": {"GET": true}}}],
			}},
			# /e/** with no method at all: the path matches, no method is allowed on it.
			"empty": {"routes": {"exact": [], "prefix": [{"min": 1, "keep": [0], "keys": {"e": {}}}]}},
		},
	},
	"egress": {
		"services": {
			# POST /v1/chat/completions.
			"openai": {"methods": {"POST": true}, "routes": {
				"exact": [[], [], [], [{"keep": [0, 1, 2], "keys": {"v1/chat/completions": {"POST": true}}}]],
				"prefix": [],
			}},
			# GET /repos/**, /users/*/repos.
			"github": {"methods": {"GET": true}, "routes": {
				"exact": [[], [], [], [{"keep": [0, 2], "keys": {"users/repos": {"GET": true}}}]],
				"prefix": [{"min": 1, "keep": [0], "keys": {"repos": {"GET": true}}}],
			}},
		},
		"tiers": {
			"standard": {"services": {"openai": true, "github": true}, "requests_per_minute": 60},
			"default": {"services": {}, "requests_per_minute": 0},
		},
	},
}

key(id, role, tier, enabled, scope, tiers) := {
	"id": id,
	"role": role,
	"tier": tier,
	"enabled": enabled,
	"upstream_headers": {
		"x-agentd-client-id": id,
		"x-agentd-client-role": role,
		"x-agentd-client-scope": scope,
		"x-agentd-sandbox-tiers": tiers,
	},
}

gw(method, path, headers) := {"attributes": {
	"contextExtensions": {"policy": "gateway"},
	"request": {"http": {"method": method, "path": path, "headers": headers}},
}}

eg(service, method, path, claims) := {"attributes": {
	"contextExtensions": {"policy": "egress", "service": service},
	"metadataContext": {"filterMetadata": {"envoy.filters.http.jwt_authn": {"sandbox": claims}}},
	"request": {"http": {"method": method, "path": path, "headers": {}}},
}}

future := (time.now_ns() / 1000000000) + 3600

sbx := {"sub": "sbx-1", "tier": "standard", "exp": future}

# The sandbox registry as agentd serves it (data.sandboxes.active): sbx-1 is active, sbx-gone
# was terminated (so it is absent).
registry := {"sbx-1": {"tier": "standard", "exp": future}, "sbx-2": {"tier": "default", "exp": future}}

run(input_doc) := r if {
	r := authz.result with input as input_doc with data.agentd.config as config with data.sandboxes.active as registry
}

# The same, with data.sandboxes as given (the registry missing or malformed).
run_with_sandboxes(input_doc, sandboxes) := r if {
	r := authz.result with input as input_doc with data.agentd.config as config with data.sandboxes as sandboxes
}

reason(r) := json.unmarshal(r.body).error.code

# The plugin reads `allowed` (defect 1 of the original returned `allow`: every request 503).
test_result_uses_allowed_key if {
	r := run(gw("GET", "/api/v1/status", {"x-api-key": "key-admin"}))
	r.allowed == true
	not "allow" in object.keys(r)
}

test_gateway_allows_valid_key if {
	r := run(gw("GET", "/api/v1/status", {"x-api-key": "key-reader"}))
	r.allowed
	r.headers == {
		"x-agentd-client-id": "reader",
		"x-agentd-client-role": "reader",
		"x-agentd-client-scope": "own",
		"x-agentd-sandbox-tiers": "",
	}
	r.dynamic_metadata == {"policy": "gateway", "client_id": "reader", "role": "reader", "tier": "default"}
	"x-api-key" in r.request_headers_to_remove
}

# Scope and sandbox tiers per role travel to agentd with the identity (agentd enforces them): the
# headers rendered into the key's entry, exactly.
test_gateway_identity_headers_per_role if {
	admin := run(gw("GET", "/api/v1/status", {"x-api-key": "key-admin"})).headers
	admin["x-agentd-client-scope"] == "all"
	admin["x-agentd-sandbox-tiers"] == "admin,default,standard"
	op := run(gw("GET", "/api/v1/status", {"x-api-key": "key-op"})).headers
	op == {
		"x-agentd-client-id": "ci",
		"x-agentd-client-role": "operator",
		"x-agentd-client-scope": "own",
		"x-agentd-sandbox-tiers": "default,standard",
	}
}

# A denial hands agentd no identity at all.
test_gateway_denial_sets_no_identity_headers if {
	r := run(gw("DELETE", "/api/v1/sandboxes/x", {"x-api-key": "key-reader"}))
	r.allowed == false
	r.headers == {"content-type": "application/json"}
}

test_gateway_bearer_key if run(gw("GET", "/api/v1/status", {"authorization": "Bearer key-reader"})).allowed

test_gateway_missing_key if {
	r := run(gw("GET", "/api/v1/status", {}))
	r.allowed == false
	r.http_status == 401
	reason(r) == "missing_api_key"
	r.headers["content-type"] == "application/json"
}

test_gateway_key_in_query_is_not_read if reason(run(gw("GET", "/api/v1/status?api_key=key-admin", {}))) == "missing_api_key"

test_gateway_both_key_headers_refused if {
	r := run(gw("GET", "/api/v1/status", {"x-api-key": "key-admin", "authorization": "Bearer key-admin"}))
	r.http_status == 401
	reason(r) == "ambiguous_api_key"
}

test_gateway_invalid_key if {
	r := run(gw("GET", "/api/v1/status", {"x-api-key": "nope"}))
	r.http_status == 401
	reason(r) == "invalid_api_key"
}

# Key rotation: the previous key is the same client (role, rate-limit tier) until its grace period ends.
test_gateway_previous_key_in_grace_is_the_same_client if {
	r := run(gw("GET", "/api/v1/status", {"x-api-key": "key-op-previous"}))
	r.allowed
	r.dynamic_metadata.client_id == "ci"
	r.dynamic_metadata.tier == "standard"
}

test_gateway_previous_key_after_grace_refused if {
	r := run(gw("GET", "/api/v1/status", {"x-api-key": "key-op-retired"}))
	r.http_status == 401
	reason(r) == "expired_api_key"
}

# Defect 4 of the original: a disabled key was accepted whenever any other key was enabled.
test_gateway_disabled_key_refused_although_others_enabled if {
	r := run(gw("GET", "/api/v1/status", {"x-api-key": "key-off"}))
	r.http_status == 403
	reason(r) == "disabled_api_key"
	r.dynamic_metadata.client_id == "off"
}

test_gateway_wrong_route if {
	r := run(gw("GET", "/api/v1/admin", {"x-api-key": "key-reader"}))
	r.http_status == 403
	reason(r) == "forbidden_route"
}

test_gateway_wrong_method if {
	r := run(gw("DELETE", "/api/v1/sandboxes/x", {"x-api-key": "key-reader"}))
	r.http_status == 403
	reason(r) == "method_not_allowed"
}

test_gateway_path_tricks if {
	reason(run(gw("GET", "/api/v1/sandboxes/../../v1/admin", {"x-api-key": "key-reader"}))) == "forbidden_route"
	run(gw("GET", "/api/v1//sandboxes/./x", {"x-api-key": "key-reader"})).allowed
	reason(run(gw("GET", "/api/v1/sandboxes%2f..%2fadmin", {"x-api-key": "key-reader"}))) == "invalid_path"
	run(run_input_status).http_status == 400
}

run_input_status := gw("GET", "/../x", {"x-api-key": "key-reader"})

# Routes through the role's index: exact patterns (a `*` takes any one segment), prefix patterns
# (the prefix itself and everything below it), nothing else.
test_gateway_route_index if {
	run(gw("POST", "/api/v1/sandboxes/x1/intents", {"x-api-key": "key-op"})).allowed
	reason(run(gw("GET", "/api/v1/sandboxes/x1/intents", {"x-api-key": "key-op"}))) == "method_not_allowed"
	reason(run(gw("POST", "/api/v1/sandboxes/x1/other", {"x-api-key": "key-op"}))) == "forbidden_route"
	reason(run(gw("POST", "/api/v1/sandboxes/x1/intents/x", {"x-api-key": "key-op"}))) == "forbidden_route"
	reason(run(gw("POST", "/api/v1/sandboxes/intents", {"x-api-key": "key-op"}))) == "forbidden_route"
	run(gw("GET", "/api/v1/sandboxes", {"x-api-key": "key-reader"})).allowed
	run(gw("GET", "/api/v1/sandboxes/a/b/c", {"x-api-key": "key-reader"})).allowed
	reason(run(gw("GET", "/api/v1/sandboxesx", {"x-api-key": "key-reader"}))) == "forbidden_route"
	reason(run(gw("GET", "/api/v1", {"x-api-key": "key-reader"}))) == "forbidden_route"
	reason(run(gw("GET", "/api/v1/status/x", {"x-api-key": "key-reader"}))) == "forbidden_route"
	reason(run(gw("GET", "/", {"x-api-key": "key-reader"}))) == "forbidden_route"
	run(gw("DELETE", "/api/v1", {"x-api-key": "key-admin"})).allowed
}

# A pattern whose rule grants no method still matches its paths: method_not_allowed, not
# forbidden_route. A role the data lacks grants nothing.
test_gateway_route_without_methods_and_unknown_role if {
	reason(run(gw("GET", "/e/x", {"x-api-key": "key-empty"}))) == "method_not_allowed"
	reason(run(gw("GET", "/f", {"x-api-key": "key-empty"}))) == "forbidden_route"
	r := run(gw("GET", "/api/v1/status", {"x-api-key": "key-ghost"}))
	reason(r) == "forbidden_route"
	r.dynamic_metadata.client_id == "ghost"
}

# Paths in normal form and the same paths needing normalisation get the same answer.
test_gateway_path_forms if {
	every p in ["/api/v1/status", "/api/v1/status/", "//api/v1//status", "/api/v1/./status", "/api/x/../v1/status", "/api/v1/%73tatus", "/api/v1/status?x=1"] {
		run(gw("GET", p, {"x-api-key": "key-reader"})).allowed
	}
	r := json.unmarshal(run(gw("GET", "/api/v1/x/../admin/", {"x-api-key": "key-reader"})).body)
	r.error.message == "role \"reader\" may not call /api/v1/admin"
}

# A request lacking fields is refused, never allowed and never undefined.
test_gateway_incomplete_requests if {
	no_path := {"attributes": {"contextExtensions": {"policy": "gateway"}, "request": {"http": {"method": "GET", "headers": {"x-api-key": "key-admin"}}}}}
	run(no_path).http_status == 400
	reason(run(no_path)) == "invalid_path"
	reason(run(gw("GET", null, {"x-api-key": "key-admin"}))) == "invalid_path"
	reason(run(gw("GET", 5, {"x-api-key": "key-admin"}))) == "invalid_path"
	no_headers := {"attributes": {"contextExtensions": {"policy": "gateway"}, "request": {"http": {"method": "GET", "path": "/api/v1/status"}}}}
	reason(run(no_headers)) == "missing_api_key"
	reason(run(gw("GET", "/api/v1/status", "x-api-key"))) == "missing_api_key"
	reason(run(gw("GET", "/api/v1/status", null))) == "missing_api_key"
	no_method := {"attributes": {"contextExtensions": {"policy": "gateway"}, "request": {"http": {"path": "/api/v1/status", "headers": {"x-api-key": "key-admin"}}}}}
	r := run(no_method)
	reason(r) == "method_not_allowed"
	json.unmarshal(r.body).error.message == "role \"admin\" may not use (no method) on /api/v1/status"
	reason(run({"attributes": {"contextExtensions": {"policy": "gateway"}}})) == "invalid_path"
}

# Which header the key comes from: x-api-key, or an Authorization that is a bearer token (any
# case); another Authorization scheme is no key (and no second one).
test_gateway_key_headers if {
	run(gw("GET", "/api/v1/status", {"authorization": "bearer key-reader"})).allowed
	run(gw("GET", "/api/v1/status", {"authorization": "BEARER key-reader"})).allowed
	run(gw("GET", "/api/v1/status", {"x-api-key": "key-reader", "authorization": "Basic abc"})).allowed
	reason(run(gw("GET", "/api/v1/status", {"authorization": "Basic key-reader"}))) == "missing_api_key"
	reason(run(gw("GET", "/api/v1/status", {"authorization": "Bearerkey-reader"}))) == "missing_api_key"
	reason(run(gw("GET", "/api/v1/status", {"x-api-key": "", "authorization": "Bearer key-reader"}))) == "ambiguous_api_key"
	reason(run(gw("GET", "/api/v1/status", {"x-api-key": ""}))) == "invalid_api_key"
}

# Defect 3 of the original: a caller header chose the policy. Only Envoy's context does.
test_caller_headers_cannot_select_policy if {
	doc := {"attributes": {"request": {"http": {"method": "GET", "path": "/api/v1/status", "headers": {"x-api-key": "key-admin", "x-policy": "egress", "x-agentd-policy": "gateway"}}}}}
	r := run(doc)
	r.allowed == false
	reason(r) == "unknown_policy"
}

test_egress_allows_tier_service if {
	r := run(eg("openai", "POST", "/v1/chat/completions?stream=true", sbx))
	r.allowed
	r.dynamic_metadata == {"policy": "egress", "sandbox_id": "sbx-1", "tier": "standard", "service": "openai"}
	"x-agentd-sandbox-token" in r.request_headers_to_remove
}

# Defect 7 of the original: path globs did not match deeper paths; the query was matched as path.
test_egress_prefix_pattern_and_query if {
	run(eg("github", "GET", "/repos/o/r/issues/1/comments", sbx)).allowed
	reason(run(eg("openai", "POST", "/v1/chat?x=/completions", sbx))) == "path_not_allowed"
}

test_egress_route_index if {
	run(eg("github", "GET", "/users/u1/repos", sbx)).allowed
	run(eg("github", "GET", "/repos", sbx)).allowed
	run(eg("github", "GET", "//repos/o/./r", sbx)).allowed
	reason(run(eg("github", "GET", "/users/u1/x/repos", sbx))) == "path_not_allowed"
	reason(run(eg("github", "GET", "/users/repos", sbx))) == "path_not_allowed"
	reason(run(eg("github", "GET", "/reposx", sbx))) == "path_not_allowed"
	reason(run(eg("github", "GET", "/", sbx))) == "path_not_allowed"
	json.unmarshal(run(eg("github", "GET", "/users/u1/./x/", sbx)).body).error.message == "github does not allow the path /users/u1/x"
}

test_egress_incomplete_requests if {
	doc := eg("openai", "POST", "/v1/chat/completions", sbx)
	reason(run(json.remove(doc, ["attributes/request/http/path"]))) == "invalid_path"
	r := run(json.remove(doc, ["attributes/request/http/method"]))
	reason(r) == "method_not_allowed"
	json.unmarshal(r.body).error.message == "openai does not allow (no method)"
	reason(run(json.remove(doc, ["attributes/request/http"]))) == "invalid_path"
}

test_egress_denials if {
	reason(run(eg("openai", "GET", "/v1/chat/completions", sbx))) == "method_not_allowed"
	reason(run(eg("openai", "POST", "/v1/files", sbx))) == "path_not_allowed"
	reason(run(eg("slack", "POST", "/api/x", sbx))) == "unknown_service"
	run(eg("slack", "POST", "/api/x", sbx)).http_status == 404
	reason(run(eg("openai", "POST", "/v1/chat/completions", object.union(sbx, {"tier": "default"})))) == "service_not_allowed"
	reason(run(eg("openai", "POST", "/v1/chat/completions", object.union(sbx, {"tier": "gold"})))) == "unknown_tier"
	reason(run(eg("openai", "POST", "/v1/chat/completions/%2e%2e%2f", sbx))) == "invalid_path"
}

test_egress_needs_verified_token if {
	doc := {"attributes": {
		"contextExtensions": {"policy": "egress", "service": "openai"},
		"request": {"http": {"method": "POST", "path": "/v1/chat/completions", "headers": {"x-sandbox-id": "sbx-1", "x-sandbox-tier": "admin"}}},
	}}
	r := run(doc)
	r.http_status == 401
	reason(r) == "missing_sandbox_token"
}

test_egress_expired_token if {
	r := run(eg("openai", "POST", "/v1/chat/completions", object.union(sbx, {"exp": 1000})))
	r.http_status == 401
	reason(r) == "token_expired"
}

# jwt_authn accepts a token without exp; such a token would never expire: refused.
test_egress_token_without_expiry if {
	r := run(eg("openai", "POST", "/v1/chat/completions", object.remove(sbx, ["exp"])))
	r.http_status == 401
	reason(r) == "token_without_expiry"
	r.dynamic_metadata.sandbox_id == "sbx-1"
	reason(run(eg("openai", "POST", "/v1/chat/completions", object.union(sbx, {"exp": "4102444800"})))) == "token_without_expiry"
	reason(run(eg("openai", "POST", "/v1/chat/completions", object.union(sbx, {"exp": null})))) == "token_without_expiry"
}

# Revocation: a valid, unexpired token of a sandbox that is no longer active is refused.
test_egress_sandbox_not_active if {
	r := run(eg("openai", "POST", "/v1/chat/completions", object.union(sbx, {"sub": "sbx-gone"})))
	r.allowed == false
	r.http_status == 401
	reason(r) == "sandbox_not_active"
	r.dynamic_metadata.sandbox_id == "sbx-gone"
}

test_egress_empty_registry_refuses_everyone if {
	r := run_with_sandboxes(eg("openai", "POST", "/v1/chat/completions", sbx), {"active": {}})
	r.http_status == 401
	reason(r) == "sandbox_not_active"
}

# Fail closed: without the registry nothing is allowed, and the status says it is the platform's fault.
test_egress_registry_unavailable if {
	r := run_with_sandboxes(eg("openai", "POST", "/v1/chat/completions", sbx), {})
	r.allowed == false
	r.http_status == 503
	reason(r) == "sandbox_registry_unavailable"
	reason(run_with_sandboxes(eg("openai", "POST", "/v1/chat/completions", sbx), {"active": ["sbx-1"]})) == "sandbox_registry_unavailable"
	reason(run_with_sandboxes(eg("openai", "POST", "/v1/chat/completions", sbx), {"active": "sbx-1"})) == "sandbox_registry_unavailable"
}

test_egress_registry_entry_allows if {
	run_with_sandboxes(eg("openai", "POST", "/v1/chat/completions", sbx), {"active": {"sbx-1": {"tier": "standard", "exp": future}}}).allowed
	not run_with_sandboxes(eg("openai", "POST", "/v1/chat/completions", sbx), {"active": {"sbx-1": false}}).allowed
}

# The order of the checks (egress.rego): identity first, then liveness, then the request.
test_egress_check_order if {
	# An expired token is reported as such, even without a registry.
	reason(run_with_sandboxes(eg("openai", "POST", "/v1/chat/completions", object.union(sbx, {"exp": 1000})), {})) == "token_expired"
	reason(run_with_sandboxes(eg("openai", "POST", "/v1/chat/completions", object.remove(sbx, ["exp"])), {})) == "token_without_expiry"

	# A revoked sandbox learns nothing about services, tiers or paths.
	reason(run(eg("nope", "DELETE", "/%2f", object.union(sbx, {"sub": "sbx-gone", "tier": "gold"})))) == "sandbox_not_active"
	reason(run_with_sandboxes(eg("nope", "DELETE", "/x", sbx), {})) == "sandbox_registry_unavailable"
}

# Defect 8 of the original: credentials passed through OPA. OPA's answer never carries one.
test_egress_answer_holds_no_credential if {
	r := run(eg("openai", "POST", "/v1/chat/completions", sbx))
	r.headers == {}
	not "credential" in object.keys(r.dynamic_metadata)
}
