"""Write the example notebooks in this folder, byte-identically on every run.

The notebooks are generated rather than hand-edited so they stay commit-friendly: no outputs, no
execution counts, fixed cell ids. Run `python examples/make_examples.py` after editing this file;
`--check` exits 1 if a committed notebook differs from what this script would write (for CI).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
LANGUAGE_INFO = {
    "name": "python",
    "file_extension": ".py",
    "mimetype": "text/x-python",
    "pygments_lexer": "ipython3",
}


@dataclass(frozen=True)
class Cell:
    """One cell of a notebook: markers are given both ways so one spec yields both vocabularies."""

    id: str
    source: str
    markdown: bool = False
    tags: tuple[str, ...] = ()
    magic: str | None = None  # first line such as "%%dsops step load", used instead of tags


def md(cell_id: str, text: str) -> Cell:
    """A markdown cell."""
    return Cell(cell_id, text.strip("\n"), markdown=True)


def code(cell_id: str, text: str, *, tags: Iterable[str] = (), magic: str | None = None) -> Cell:
    """A code cell; `tags` for the tag vocabulary, `magic` for the %%dsops vocabulary."""
    return Cell(cell_id, text.strip("\n"), tags=tuple(tags), magic=magic)


def to_nbformat(cell: Cell, *, use_magics: bool) -> nbformat.NotebookNode:
    """Build the nbformat cell; with `use_magics` the marker becomes the first source line."""
    if cell.markdown:
        node = new_markdown_cell(cell.source)
    elif use_magics and cell.magic:
        node = new_code_cell(f"{cell.magic}\n{cell.source}")
    else:
        node = new_code_cell(cell.source)
        if cell.tags:
            node.metadata["tags"] = list(cell.tags)
    node.id = cell.id
    return node


def build(
    cells: Iterable[Cell], *, use_magics: bool = False, metadata: dict[str, object] | None = None
) -> nbformat.NotebookNode:
    """A validated notebook with a python3 kernelspec and no outputs."""
    nb = new_notebook(cells=[to_nbformat(c, use_magics=use_magics) for c in cells])
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = dict(LANGUAGE_INFO)
    nb.metadata.update(metadata or {})
    nbformat.validate(nb)
    return nb


# --- wine: RidgeClassifier on the wine data set (tags, or %%dsops magics) ---------------------

WINE_IMPORTS = """
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.datasets import load_wine
from sklearn.linear_model import RidgeClassifier
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    accuracy_score,
    classification_report,
    confusion_matrix,
)
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
"""

WINE_PARAMETERS = """
test_size: float = 0.25
alpha: float = 1.0
seed: int = 42
output_dir: str = "outputs"
"""

WINE_HELPER = '''
def per_class_accuracy(y_true, y_pred, class_names):
    """Share of each class's test samples predicted correctly (recall), rounded for stable JSON."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    return {
        str(name): round(float(np.mean(y_pred[y_true == k] == k)), 6)
        for k, name in enumerate(class_names)
    }
'''

WINE_LOAD = """
wine = load_wine(as_frame=True)
df = wine.frame
class_names = [str(name) for name in wine.target_names]
df.shape
"""

WINE_SPLIT = """
X = df.drop(columns="target")
y = df["target"]
X_train_raw, X_test_raw, y_train, y_test = train_test_split(
    X, y, test_size=test_size, random_state=seed, stratify=y
)
"""

WINE_SCALE = """
scaler = StandardScaler()
X_train = scaler.fit_transform(X_train_raw)
X_test = scaler.transform(X_test_raw)
display(pd.DataFrame(X_train[:3], columns=X.columns).round(3))
"""

WINE_EXPLORE = """
df.describe().T
"""

WINE_TRAIN = """
model = RidgeClassifier(alpha=alpha)
model.fit(X_train, y_train)
"""

WINE_SCORE = """
y_pred = model.predict(X_test)
accuracy = accuracy_score(y_test, y_pred)
cm = confusion_matrix(y_test, y_pred)
print(f"accuracy: {accuracy:.4f}")
print(classification_report(y_test, y_pred, target_names=class_names, digits=4))
"""

WINE_PLOT = """
os.makedirs(output_dir, exist_ok=True)
fig, ax = plt.subplots(figsize=(4.5, 4.5))
ConfusionMatrixDisplay(cm, display_labels=class_names).plot(ax=ax, colorbar=False)
ax.set_title(f"RidgeClassifier(alpha={alpha})")
fig.tight_layout()
plt.savefig(os.path.join(output_dir, "confusion_matrix.png"), dpi=100)
plt.show()
"""

WINE_METRICS = """
metrics = {
    "accuracy": round(float(accuracy), 6),
    "alpha": float(alpha),
    "n_test": len(y_test),
    "confusion_matrix": cm.tolist(),
    "per_class_accuracy": per_class_accuracy(y_test, y_pred, class_names),
}
with open(Path(output_dir) / "metrics.json", "w", encoding="utf-8") as f:
    json.dump(metrics, f, sort_keys=True, indent=2)
    f.write("\\n")
metrics["accuracy"]
"""


def wine_cells(*, title: str, intro: str, load_ext: bool) -> list[Cell]:
    """The wine pipeline; the same cells carry both tag and magic markers."""
    cells = [md("title", f"# {title}\n\n{intro}")]
    if load_ext:
        cells.append(code("load-ext", "%load_ext dsops_jupyter"))
    cells += [
        code("setup-1", "%matplotlib inline"),
        code("imports-1", WINE_IMPORTS),
        md("parameters-md", "Parameters: papermill and `dsops` override these literals."),
        code("parameters-1", WINE_PARAMETERS, tags=["parameters"], magic="%%dsops parameters"),
        md("helpers-md", "A helper used by the evaluate step (shared by all steps)."),
        code("helpers-1", WINE_HELPER),
        md("load-md", "## Load\nThe wine recognition data set ships with scikit-learn."),
        code("load-1", WINE_LOAD, tags=["step:load"], magic="%%dsops step load"),
        md("features-md", "## Features\nStratified split, then standard scaling."),
        code("features-1", WINE_SPLIT, tags=["step:features"], magic="%%dsops step features"),
        code("features-2", WINE_SCALE),
        md("explore-md", "Exploration only: pipelines skip this cell."),
        code("explore-1", WINE_EXPLORE, tags=["skip"], magic="%%dsops skip"),
        md("train-md", "## Train"),
        code(
            "train-1",
            WINE_TRAIN,
            tags=["step:train", "after:features"],
            magic="%%dsops step train --after features",
        ),
        md("evaluate-md", "## Evaluate\nAccuracy, confusion matrix and `metrics.json`."),
        code("evaluate-1", WINE_SCORE, tags=["step:evaluate"], magic="%%dsops step evaluate"),
        code("evaluate-2", WINE_PLOT),
        code("evaluate-3", WINE_METRICS),
    ]
    return cells


def wine_notebook() -> nbformat.NotebookNode:
    """Steps marked with JupyterLab cell tags."""
    intro = (
        "A RidgeClassifier on scikit-learn's wine data, marked as steps with **cell tags** "
        "(`parameters`, `step:NAME`, `after:NAME`, `skip`). Untagged code cells after a step "
        "cell continue that step.\n\n"
        "```\npapermill wine.ipynb out.ipynb -p alpha 0.5\ndsops convert wine.ipynb\n```"
    )
    return build(wine_cells(title="Wine classifier (cell tags)", intro=intro, load_ext=False))


def wine_magics_notebook() -> nbformat.NotebookNode:
    """The same pipeline marked only with `%%dsops` first lines."""
    intro = (
        "The same pipeline as `wine.ipynb`, marked with **`%%dsops` cell magics** instead of "
        "tags: `%%dsops parameters`, `%%dsops step NAME [--after A]`, `%%dsops skip`. "
        "No cell metadata is needed."
    )
    cells = wine_cells(title="Wine classifier (%%dsops magics)", intro=intro, load_ext=True)
    return build(cells, use_magics=True)


# --- iris_kale: DecisionTreeClassifier on iris, Kale's tag vocabulary -------------------------

IRIS_IMPORTS = """
import json
import os

import numpy as np
from sklearn.datasets import load_iris
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier
"""

IRIS_FUNCTIONS = '''
def class_balance(labels):
    """Count of each label, as plain ints so it prints and serialises the same everywhere."""
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}
'''

IRIS_PARAMETERS = """
max_depth = 3
test_size = 0.3
seed = 0
output_dir = "outputs"
"""

IRIS_LOAD = """
iris = load_iris(as_frame=True)
df = iris.frame
feature_names = list(iris.feature_names)
"""

IRIS_EXPLORE = """
df.groupby("target").mean()
"""

IRIS_SPLIT = """
X_train, X_test, y_train, y_test = train_test_split(
    df[feature_names], df["target"], test_size=test_size, random_state=seed, stratify=df["target"]
)
print("train:", class_balance(y_train), "test:", class_balance(y_test))
"""

IRIS_TRAIN = """
model = DecisionTreeClassifier(max_depth=max_depth, random_state=seed)
model.fit(X_train, y_train)
"""

IRIS_EVALUATE = """
y_pred = model.predict(X_test)
accuracy = round(float(accuracy_score(y_test, y_pred)), 6)
macro_f1 = round(float(f1_score(y_test, y_pred, average="macro")), 6)
cm = confusion_matrix(y_test, y_pred)
print(f"accuracy: {accuracy:.4f}  macro F1: {macro_f1:.4f}")
"""

IRIS_METRICS_FILE = """
os.makedirs(output_dir, exist_ok=True)
metrics = {
    "accuracy": accuracy,
    "macro_f1": macro_f1,
    "max_depth": int(max_depth),
    "n_test": len(y_test),
    "confusion_matrix": cm.tolist(),
}
with open(os.path.join(output_dir, "metrics.json"), "w", encoding="utf-8") as f:
    json.dump(metrics, f, sort_keys=True, indent=2)
    f.write("\\n")
"""

IRIS_PIPELINE_METRICS = """
accuracy
macro_f1
"""

# Notebook-level settings Kale's JupyterLab extension stores; kept so Kale opens the notebook as is.
KUBEFLOW_METADATA = {
    "kubeflow_notebook": {
        "autosnapshot": False,
        "docker_image": "",
        "experiment": {"id": "new", "name": "iris"},
        "experiment_name": "iris",
        "katib_run": False,
        "pipeline_description": "Decision tree on the iris data set",
        "pipeline_name": "iris-tree",
        "snapshot_volumes": False,
        "steps_defaults": [],
        "volume_access_mode": "rwm",
        "volumes": [],
    }
}


def iris_kale_notebook() -> nbformat.NotebookNode:
    """A notebook prepared for Kale, which dsops reads unchanged."""
    intro = (
        "A decision tree on scikit-learn's iris data, tagged with **Kale's vocabulary**: "
        "`imports`, `functions`, `pipeline-parameters`, `block:`/`step:`, `prev:`, per-step "
        "tags such as `image:` and `limit:` (kept in `pipeline.json` for exporters), "
        "`pipeline-metrics` and `skip`. dsops reads it with no changes."
    )
    cells = [
        md("title", f"# Iris decision tree (Kale tags)\n\n{intro}"),
        code("imports-1", IRIS_IMPORTS, tags=["imports"]),
        code("functions-1", IRIS_FUNCTIONS, tags=["functions"]),
        code("parameters-1", IRIS_PARAMETERS, tags=["pipeline-parameters"]),
        md("load-md", "## Load data\n`block:` is Kale's older spelling of `step:`."),
        code("load-1", IRIS_LOAD, tags=["block:load_data"]),
        code("explore-1", IRIS_EXPLORE, tags=["skip"]),
        md("split-md", "## Split"),
        code("split-1", IRIS_SPLIT, tags=["step:split", "prev:load_data"]),
        md("train-md", "## Train\nKale per-step tags: a container image and a resource limit."),
        code(
            "train-1",
            IRIS_TRAIN,
            tags=["step:train_model", "prev:split", "image:python:3.11", "limit:memory:1Gi"],
        ),
        md("evaluate-md", "## Evaluate"),
        code("evaluate-1", IRIS_EVALUATE, tags=["step:evaluate", "prev:train_model"]),
        code("evaluate-2", IRIS_METRICS_FILE),
        md("metrics-md", "The run's metrics, as Kale reads them: bare variable names."),
        code("metrics-1", IRIS_PIPELINE_METRICS, tags=["pipeline-metrics"]),
    ]
    return build(cells, metadata=KUBEFLOW_METADATA)


# --- tuning: a grid search whose upstream steps take tens of seconds (the step cache's case) --

TUNING_IMPORTS = """
import json
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.svm import SVC
"""

TUNING_PARAMETERS = """
test_size: float = 0.25
seed: int = 42
n_c: int = 10
n_gamma: int = 8
folds: int = 5
output_dir: str = "outputs"
"""

TUNING_LOAD = """
digits = load_digits()
X, y = digits.data, digits.target
X.shape
"""

TUNING_SPLIT = """
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=test_size, random_state=seed, stratify=y
)
"""

TUNING_SEARCH = """
grid = {
    "C": np.logspace(-1, 2, n_c).round(6).tolist(),
    "gamma": np.logspace(-4, -2, n_gamma).round(8).tolist(),
}
search = GridSearchCV(SVC(), grid, cv=folds, n_jobs=1)
search.fit(X_train, y_train)
print(f"{len(search.cv_results_['params'])} candidates x {folds} folds")
print("best:", search.best_params_, round(float(search.best_score_), 6))
"""

TUNING_REPORT = """
y_pred = search.predict(X_test)
metrics = {
    "accuracy": round(float(accuracy_score(y_test, y_pred)), 6),
    "best_params": search.best_params_,
    "cv_score": round(float(search.best_score_), 6),
    "candidates": len(search.cv_results_["params"]),
}
Path(output_dir).mkdir(parents=True, exist_ok=True)
with open(Path(output_dir) / "metrics.json", "w", encoding="utf-8") as f:
    json.dump(metrics, f, sort_keys=True, indent=2)
    f.write("\\n")
metrics["accuracy"]
"""


def tuning_notebook() -> nbformat.NotebookNode:
    """An SVC grid search on the digits data: slow upstream steps, a quick last step."""
    intro = (
        "An SVC grid search on scikit-learn's digits data (80 candidates x 5 folds by default, "
        "some 30 s): the upstream steps are slow, the last one is quick. Edit the report and "
        "re-run with the step cache, `dsops run tuning.ipynb --cache`: only the report runs."
    )
    cells = [
        md("title", f"# Hyperparameter search (step cache)\n\n{intro}"),
        code("imports-1", TUNING_IMPORTS),
        code("parameters-1", TUNING_PARAMETERS, tags=["parameters"]),
        md("load-md", "## Load\nThe handwritten digits data set ships with scikit-learn."),
        code("load-1", TUNING_LOAD, tags=["step:load"]),
        code("split-1", TUNING_SPLIT, tags=["step:split"]),
        md("search-md", "## Search\nEvery (C, gamma) pair, cross-validated."),
        code("search-1", TUNING_SEARCH, tags=["step:search"]),
        md("report-md", "## Report\nTest accuracy of the best model, `metrics.json`."),
        code("report-1", TUNING_REPORT, tags=["step:report"]),
    ]
    return build(cells)


NOTEBOOKS = {
    "wine.ipynb": wine_notebook,
    "wine_magics.ipynb": wine_magics_notebook,
    "iris_kale.ipynb": iris_kale_notebook,
    "tuning.ipynb": tuning_notebook,
}


def render(nb: nbformat.NotebookNode) -> bytes:
    """The exact bytes written: nbformat's canonical JSON plus a final newline."""
    text = nbformat.writes(nb, version=4)
    return (text if text.endswith("\n") else text + "\n").encode("utf-8")


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` in one step so an interrupted run never leaves half a notebook."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) every example notebook."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a notebook is stale")
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into")
    args = parser.parse_args(argv)
    stale = []
    for name, make in NOTEBOOKS.items():
        path = args.out / name
        data = render(make())
        if args.check:
            if not path.exists() or path.read_bytes() != data:
                stale.append(name)
        elif not path.exists() or path.read_bytes() != data:
            write_atomic(path, data)
            print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)}; run python examples/make_examples.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
