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

# segments: a path in normal form is split (the fast path); any other path is normalised. Both
# give what normalize gives.
normal_form := [
	"/api/v1/status",
	"/a",
	"/agentd.v1.Agentd/Health",
	"/a+b/;c/d=e,f",
	"/a:b@c/~d_e-f",
	"/a!$&'()*+,;=:@-._~",
	"/v1/chat/completions",
	"/x/y./z..",
	"/A/B/*",
]

not_normal_form := [
	"/",
	"//api///v1//status/",
	"/api/v1/status/",
	"/api/v1/./status",
	"/api/v1/sandboxes/../status",
	"/.well-known/x",
	"/a/.b",
	"/a/..b",
	"/api/v1/%73tatus",
	"/api/v1/%2e%2e/v1/status",
	"/api/v1/status?x=/admin",
	"/api/v1/status#frag",
	"/a b",
	"/%2Bb",
	"/é",
	"/a\\b",
	"/api%2fv1",
	"/..",
	"/a/../../etc",
	"/api/%zz",
	"/api/%0a",
	"relative/path",
	"",
]

test_normal_form_paths_take_the_fast_path if {
	every p in normal_form {
		regex.match(`^(/[A-Za-z0-9_~!$&'()*+,;=:@-][A-Za-z0-9._~!$&'()*+,;=:@-]*)+$`, p)
		paths.normalize(p).path == p
		paths.segments(p) == paths.normalize(p).segments
	}
}

test_other_paths_are_normalised if {
	every p in not_normal_form {
		not regex.match(`^(/[A-Za-z0-9_~!$&'()*+,;=:@-][A-Za-z0-9._~!$&'()*+,;=:@-]*)+$`, p)
		segments_as_normalised(p)
	}
}

# Defined with the same segments, or undefined exactly when normalize refuses the path.
segments_as_normalised(p) if paths.segments(p) == paths.normalize(p).segments

segments_as_normalised(p) if {
	not paths.normalize(p).ok
	not paths.segments(p)
}

# The same path, in normal form and not: the same segments.
test_fast_and_slow_paths_agree if {
	want := ["api", "v1", "sandboxes", "x1", "intents"]
	paths.segments("/api/v1/sandboxes/x1/intents") == want
	every p in [
		"/api/v1/sandboxes/x1/intents/",
		"//api/v1//sandboxes/x1/intents",
		"/api/v1/./sandboxes/x1/intents",
		"/api/v1/sandboxes/x1/y/../intents",
		"/api/v1/sandboxes/%78%31/intents",
		"/api/v1/sandboxes/x1/%69ntents",
		"/api/v1/sandboxes/x1/intents?x=1",
		"/api/v1/sandboxes/x1/intents#x",
	] {
		paths.segments(p) == want
	}
	paths.segments("/a+b") == ["a+b"]
	paths.segments("/a%2Bb") == ["a+b"]
	paths.segments("/a;b=c") == ["a;b=c"]
	paths.segments("/a%20b") == ["a b"]
	paths.segments("/") == []
	paths.segments("/a/..") == []
}

test_refused_paths_have_no_segments if {
	every p in ["/..", "/api%2fv1", "/api%5Cv1", "/api\\v1", "/api/%zz", "/api/%0a", "relative", ""] {
		not paths.segments(p)
	}
	not paths.segments(5)
	not paths.segments(null)
}

test_path_as_messages_spell_it if {
	paths.path(["a", "b"]) == "/a/b"
	paths.path([]) == "/"
}
