"""Write the mutation probes: one minimal notebook per way a step can change a value it reads.

Each probe binds a value in one step, mutates it in the next without rebinding it, and writes
what a third step sees to ``outputs/result.json``. Run from anywhere: ``python
tests/corpus/probes/build_mutation_probes.py`` rewrites the ``mutation_*.ipynb`` next to it.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from nbformat.v4 import new_code_cell  # noqa: E402

from tests.helpers import make_notebook  # noqa: E402

SAVE = (
    "import json\nimport os\n\n"
    'os.makedirs("outputs", exist_ok=True)\n'
    'with open("outputs/result.json", "w") as fh:\n'
    "    json.dump({result}, fh, sort_keys=True)"
)

PROBES: dict[str, list[tuple[str, list[str]]]] = {
    "mutation_append": [
        ("rows = [1, 2]", ["step:load"]),
        (
            "rows.append(3)\nfirst = rows[0]\nnested = [rows]\nnested[0].append(4)",
            ["step:grow"],
        ),
        (SAVE.format(result='{"rows": rows, "first": first}'), ["step:report"]),
    ],
    "mutation_inplace_rename": [
        ('import pandas as pd\n\ndf = pd.DataFrame({"a": [1, 2, 3]})', ["step:load"]),
        ('df.rename(columns={"a": "b"}, inplace=True)\nprint(df.head())', ["step:rename"]),
        (
            SAVE.format(result='{"columns": list(df.columns), "total": int(df["b"].sum())}'),
            ["step:report"],
        ),
    ],
    "mutation_loop_alias": [
        ('rows = [{"x": 1}, {"x": 2}]', ["step:load"]),
        ('for r in rows:\n    r["z"] = r["x"] * 10\nprint(len(rows))', ["step:derive"]),
        (SAVE.format(result='{"z": [r["z"] for r in rows]}'), ["step:report"]),
    ],
    "mutation_helper": [
        ("def add_total(items):\n    items.append(sum(items))", ["step:helpers"]),
        ("values = [1, 2, 3]", ["step:load"]),
        ("add_total(values)", ["step:total"]),
        (SAVE.format(result='{"values": values}'), ["step:report"]),
    ],
    "mutation_shuffle": [
        ("deck = list(range(10))", ["step:load"]),
        ("import random\n\nrandom.seed(7)\nrandom.shuffle(deck)", ["step:shuffle"]),
        (SAVE.format(result='{"deck": deck}'), ["step:report"]),
    ],
    "mutation_del_item": [
        ('config = {"keep": 1, "drop": 2, "inner": {"a": 1, "b": 2}}', ["step:load"]),
        ('inner = config["inner"]\ndel inner["b"]', ["step:prune_inner"]),
        ('del config["drop"]', ["step:prune"]),
        (SAVE.format(result='{"config": config}'), ["step:report"]),
    ],
    "mutation_augassign": [
        ('counts = {"a": 1}\ntable = [{"n": 1}, {"n": 2}]', ["step:load"]),
        ('counts["a"] += 5\nfor row in table:\n    row["n"] += 100', ["step:bump"]),
        (SAVE.format(result='{"counts": counts, "table": table}'), ["step:report"]),
    ],
}


def main() -> None:
    for name, cells in PROBES.items():
        nodes = []
        for number, (source, tags) in enumerate(cells, 1):
            node = new_code_cell(source, id=f"cell-{number}")  # fixed ids: same bytes each time
            node.metadata["tags"] = tags
            nodes.append(node)
        make_notebook(HERE / f"{name}.ipynb", nodes)


if __name__ == "__main__":
    main()
