package agentd.envoy.authz_test

import data.agentd.envoy.authz

# Test data in the shape policy/bundle.ts renders (renderPolicyData).
config := {
	"gateway": {
		"keys": {
			crypto.sha256("key-admin"): {"id": "admin", "role": "admin", "tier": "unlimited", "enabled": true},
			crypto.sha256("key-reader"): {"id": "reader", "role": "reader", "tier": "default", "enabled": true},
			crypto.sha256("key-off"): {"id": "off", "role": "admin", "tier": "default", "enabled": false},
			crypto.sha256("key-op"): {"id": "ci", "role": "operator", "tier": "standard", "enabled": true},
			# Client ci's key before a rotation: valid until its grace period ends.
			crypto.sha256("key-op-previous"): {"id": "ci", "role": "operator", "tier": "standard", "enabled": true, "not_after": "2999-01-01T00:00:00Z"},
			crypto.sha256("key-op-retired"): {"id": "ci", "role": "operator", "tier": "standard", "enabled": true, "not_after": "2000-01-01T00:00:00Z"},
			crypto.sha256("key-legacy"): {"id": "legacy", "role": "legacy", "tier": "default", "enabled": true},
			crypto.sha256("key-odd"): {"id": "odd", "role": "odd", "tier": "default", "enabled": true},
		},
		"identity_headers": {
			"client_id": "x-agentd-client-id",
			"client_role": "x-agentd-client-role",
			"client_scope": "x-agentd-client-scope",
			"sandbox_tiers": "x-agentd-sandbox-tiers",
		},
		"roles": {
			"admin": {
				"rules": [{"methods": {"GET": true, "POST": true, "DELETE": true}, "patterns": [{"segments": ["api", "v1"], "prefix": true}]}],
				"scope": "all",
				"sandbox_tiers": ["admin", "default", "standard"],
			},
			"operator": {
				"rules": [{"methods": {"GET": true}, "patterns": [{"segments": ["api", "v1", "status"], "prefix": false}]}],
				"scope": "own",
				# Unsorted on purpose: the header is sorted whatever the data's order.
				"sandbox_tiers": ["standard", "default"],
			},
			"reader": {
				"rules": [{"methods": {"GET": true}, "patterns": [{"segments": ["api", "v1", "status"], "prefix": false}, {"segments": ["api", "v1", "sandboxes"], "prefix": true}]}],
				"scope": "own",
				"sandbox_tiers": [],
			},
			# Data without the fields (an older bundle): the narrowest answer.
			"legacy": {"rules": [{"methods": {"GET": true}, "patterns": [{"segments": ["api", "v1", "status"], "prefix": false}]}]},
			# A scope other than "all" never widens.
			"odd": {
				"rules": [{"methods": {"GET": true}, "patterns": [{"segments": ["api", "v1", "status"], "prefix": false}]}],
				"scope": "ALL",
				"sandbox_tiers": ["default"],
			},
		},
	},
	"egress": {
		"services": {
			"openai": {"methods": {"POST": true}, "patterns": [{"segments": ["v1", "chat", "completions"], "prefix": false}]},
			"github": {"methods": {"GET": true}, "patterns": [{"segments": ["repos"], "prefix": true}]},
		},
		"tiers": {
			"standard": {"services": {"openai": true, "github": true}, "requests_per_minute": 60},
			"default": {"services": {}, "requests_per_minute": 0},
		},
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

# Scope and sandbox tiers per role travel to agentd with the identity (agentd enforces them).
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

test_gateway_identity_defaults_are_narrow if {
	legacy := run(gw("GET", "/api/v1/status", {"x-api-key": "key-legacy"})).headers
	legacy["x-agentd-client-scope"] == "own"
	legacy["x-agentd-sandbox-tiers"] == ""
	odd := run(gw("GET", "/api/v1/status", {"x-api-key": "key-odd"})).headers
	odd["x-agentd-client-scope"] == "own"
	odd["x-agentd-sandbox-tiers"] == "default"
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
