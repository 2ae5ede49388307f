#!/bin/sh
# The configuration reference in README.md (between the config-reference markers) lists
# every key with its default and meaning exactly as `intentd --print-config` prints them for
# an empty file, which comes from the same table that parses and validates the file.  On a
# mismatch the expected table is in this test's log: paste it into README.md.
. tests/integration/lib.sh
if [ -n "${SAN:-}" ]; then echo "nothing sanitizer-specific, skipped under SAN=$SAN"; exit 77; fi
T=$(mktemp_state)
[ -x "$BIN/intentd" ] || fail "$BIN/intentd not built"
[ -f README.md ] || fail "no README.md"
: > "$T/empty.yaml"
"$BIN/intentd" --print-config -c "$T/empty.yaml" > "$T/defaults.yaml" \
    || fail "intentd --print-config failed"

/usr/bin/python3 - "$T/defaults.yaml" README.md "$T/expected.md" << 'EOF'
import re, sys
defaults, readme, out = sys.argv[1:4]

# --print-config: "# doc" lines above "key: value" lines, two spaces per level.
rows, doc, path = [], [], []
for line in open(defaults).read().splitlines():
    if not line.strip():
        continue
    indent = (len(line) - len(line.lstrip(" "))) // 2
    s = line.strip()
    if s.startswith("#"):
        if not s.startswith(("# intentd: the effective", "# (live) keys take effect")):
            doc.append(s[1:].strip())  # (the two lines above are the file's own header)
        continue
    if s.startswith("- "):           # items of a list value (features)
        continue
    key, _, value = s.partition(":")
    path = path[:indent] + [key]
    value = value.strip()
    if value or key == "features":
        full = ".".join(path)
        if key == "features":
            value = "a list of `{name, type, ...}`, see `config/intentd.yaml`"
        else:
            value = "`%s`" % value
        rows.append((full, value, " ".join(doc)))
    doc = []
esc = lambda t: t.replace("|", "\\|")
table = ["| Key | Default | Meaning |", "|---|---|---|"]
table += ["| `%s` | %s | %s |" % (k, esc(v), esc(d)) for k, v, d in rows]
expected = "\n".join(table) + "\n"
open(out, "w").write(expected)

text = open(readme).read()
m = re.search(r"<!-- config-reference:start -->\n(.*?)<!-- config-reference:end -->", text, re.S)
if not m:
    sys.exit("README.md has no config-reference markers")
got = m.group(1).strip("\n") + "\n"
if got != expected:
    import difflib
    sys.stdout.writelines(difflib.unified_diff(got.splitlines(True), expected.splitlines(True),
                                               "README.md", "intentd --print-config"))
    sys.exit("README.md's configuration reference differs from --print-config")
print("%d keys in README.md match --print-config" % len(rows))
EOF
rc=$?
if [ $rc -ne 0 ]; then
    echo "--- the expected table (between the markers in README.md):"
    cat "$T/expected.md"
    fail "README.md's configuration reference is out of date"
fi
echo "readme_config: ok"
