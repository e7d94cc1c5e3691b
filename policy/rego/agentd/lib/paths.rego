# Request paths as the policy sees them: without query or fragment, percent-decoded, with `//`,
# `.` and `..` resolved. Mirrors policy/paths.ts (normalizePath); the tests hold both to the
# same cases. Encoded slashes and backslashes are refused: decoding them would change which
# segments the path has.
#
# Matching a path against the patterns of a role or service is not done here: the bundle ships
# them compiled into an index (policy/bundle.ts, compileRoutes) that gateway.rego and egress.rego
# look the segments up in.
package agentd.lib.paths

# segments(raw) is the segments of the normalised path (["a", "b"] for "/a/b", [] for "/"), and
# undefined when the path is refused. What Envoy forwards is nearly always already in normal form
# (Envoy's normalize_path and merge_slashes): one or more "/"-led segments of unreserved and
# sub-delimiter characters and ":" "@" (the pchar set of RFC 3986 without "%"), none empty and
# none starting with "." (so no "." or ".." segment). Such a path has no query, fragment, "%",
# "+" turned into a space, backslash or control character either, so normalize would give it
# back unchanged: it is split, not normalised. Every other path (the root "/" included) takes
# normalize.
segments(raw) := split(substring(raw, 1, -1), "/") if {
	regex.match(`^(/[A-Za-z0-9_~!$&'()*+,;=:@-][A-Za-z0-9._~!$&'()*+,;=:@-]*)+$`, raw)
} else := n.segments if {
	n := normalize(raw)
	n.ok
}

# normalize(raw) is {"ok": true, "path": "/a/b", "segments": ["a", "b"]} or {"ok": false}.
normalize(raw) := {"ok": true, "path": concat("", ["/", concat("/", segs)]), "segments": segs} if {
	path := split(split(raw, "?")[0], "#")[0]
	startswith(path, "/")
	not regex.match(`(?i)%(2f|5c)|\\`, path)

	# urlquery.decode is query decoding ("+" is a space): protect literal "+" first.
	decoded := urlquery.decode(replace(path, "+", "%2B"))
	not regex.match(`[\x00-\x1f\x7f]`, decoded)
	parts := [s | some s in split(decoded, "/"); s != ""; s != "."]
	segs := resolve(parts)
} else := {"ok": false}

# Without "..", the parts are the segments.
resolve(parts) := parts if {
	not ".." in parts
}

# With "..": refuse to climb above the root; a segment survives unless a later ".." takes the
# depth below the depth it was added at.
resolve(parts) := [parts[i] |
	some i
	parts[i] != ".."
	every k in numbers.range(i + 1, count(parts)) {
		depth(parts, k) >= depth(parts, i + 1)
	}
] if {
	".." in parts
	every k in numbers.range(1, count(parts)) {
		depth(parts, k) >= 0
	}
}

# Depth after the first k parts.
depth(parts, k) := count([1 | some i; parts[i] != ".."; i < k]) - count([1 | some i; parts[i] == ".."; i < k])

# The path as messages spell it: "/" and the segments.
path(segs) := concat("", ["/", concat("/", segs)])
