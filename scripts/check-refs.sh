#!/usr/bin/env bash
# The repository stands on its own: no comment or doc may cite design notes that live outside it (files
# named FACTS.md, DESIGN.md or STYLE.md, or a ../shared folder). A fact belongs in docs/ with its original
# source (a PostgreSQL file, a Neon path). Fails listing each citation it finds.
set -euo pipefail
cd "$(dirname "$0")/.."
pattern='FACTS(\.md)?|DESIGN(\.md)? ?D[0-9]+|DESIGN\.md|STYLE\.md|\.\./shared'
if git grep -nE "$pattern" -- . ':!scripts/check-refs.sh'; then
  echo "check-refs: the lines above cite documents outside the repository; write the fact into docs/ instead" >&2
  exit 1
fi
echo "check-refs: no citations of documents outside the repository"
