#!/usr/bin/env bash
# Builds the walredo bundle a second time, into a temporary directory, and compares its manifest with that of
# the bundle at $1 (built from the same inputs): every file's sha256 and every link must be equal. Prints the
# differing paths and exits 1 if any differs.
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=${1:?usage: $0 BUNDLE_DIR}
again=$(mktemp -d "${TMPDIR:-/tmp}/walredo-again.XXXXXX")
trap 'rm -rf "$again"' EXIT
# The build checks the bundle as an unprivileged user, who must be able to reach it.
chmod 755 "$again"
walredo-bundle/build.sh "$again/bundle" >/dev/null
python3 - "$bundle/manifest.json" "$again/bundle/manifest.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
differ = []
for section in ("files", "symlinks"):
    x, y = a.get(section, {}), b.get(section, {})
    for path in sorted(set(x) | set(y)):
        if x.get(path) != y.get(path):
            differ.append(f"{section}: {path}: {x.get(path)} vs {y.get(path)}")
if differ:
    print("the two builds differ:", *differ, sep="\n  ")
    sys.exit(1)
print(f"reproducible: {len(a['files'])} files and {len(a.get('symlinks', {}))} links equal in two builds")
PY
