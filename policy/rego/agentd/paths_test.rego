package agentd.lib.paths_test

import data.agentd.lib.paths

test_plain if paths.normalize("/api/v1/status") == {"ok": true, "path": "/api/v1/status", "segments": ["api", "v1", "status"]}

test_root if paths.normalize("/") == {"ok": true, "path": "/", "segments": []}

test_query_and_fragment_dropped if {
	paths.normalize("/get?x=/admin").path == "/get"
	paths.normalize("/get#frag").path == "/get"
}

test_slashes_merged if paths.normalize("//api///v1//status/").path == "/api/v1/status"

test_dots_resolved if {
	paths.normalize("/api/v1/./sandboxes/../status").path == "/api/v1/status"
	paths.normalize("/a/b/c/../../d").path == "/a/d"
	paths.normalize("/a/..").path == "/"
}

test_climbing_above_root_refused if {
	not paths.normalize("/..").ok
	not paths.normalize("/a/../../etc").ok
}

test_percent_decoded if {
	paths.normalize("/api/v1/%73tatus").path == "/api/v1/status"
	paths.normalize("/api/v1/%2e%2e/v1/status").path == "/api/v1/status"
	paths.normalize("/a+b").path == "/a+b"
}

test_encoded_separators_refused if {
	not paths.normalize("/api%2fv1/status").ok
	not paths.normalize("/api%2Fv1").ok
	not paths.normalize("/api%5cv1").ok
	not paths.normalize("/api\\v1").ok
}

test_bad_encoding_and_controls_refused if {
	not paths.normalize("/api/%zz").ok
	not paths.normalize("/api/%0a").ok
	not paths.normalize("relative/path").ok
	not paths.normalize("").ok
}

exact := {"segments": ["v1", "messages"], "prefix": false}

below := {"segments": ["repos"], "prefix": true}

one := {"segments": ["status", "*"], "prefix": false}

test_exact_pattern if {
	paths.matches(["v1", "messages"], exact)
	not paths.matches(["v1", "messages", "x"], exact)
	not paths.matches(["v1"], exact)
}

test_prefix_pattern_matches_deeper_paths if {
	paths.matches(["repos"], below)
	paths.matches(["repos", "a", "b", "issues"], below)
	not paths.matches(["reposx"], below)
	not paths.matches([], below)
}

test_single_segment_wildcard if {
	paths.matches(["status", "418"], one)
	not paths.matches(["status"], one)
	not paths.matches(["status", "418", "x"], one)
}
