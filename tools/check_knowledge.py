"""Check every knowledge data file: each number a sourced entry with a known unit.

    python tools/check_knowledge.py            # all files
    python tools/check_knowledge.py binders    # files whose path contains 'binders'
"""

import sys

from carcell.io.yamlio import load_yaml
from carcell.knowledge.store import DATA_DIR, check_entry, walk_entries

bad = 0
for file in sorted(DATA_DIR.rglob("*.yaml")):
    rel = str(file.relative_to(DATA_DIR))
    if len(sys.argv) > 1 and sys.argv[1] not in rel:
        continue
    try:
        tree = load_yaml(file) or {}
    except Exception as e:  # noqa: BLE001 - report any parse error with the file name
        print(f"{rel}: cannot parse: {e}")
        bad += 1
        continue
    for path, node in walk_entries(tree):
        try:
            if isinstance(node, dict):
                check_entry(f"{rel}:{path}", node)
            else:
                raise ValueError(f"{rel}:{path}: bare number {node!r} (make it an entry)")
        except Exception as e:  # noqa: BLE001
            print(e)
            bad += 1
print("ok" if not bad else f"{bad} problem(s)")
sys.exit(1 if bad else 0)
