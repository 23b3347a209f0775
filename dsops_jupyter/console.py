"""Progress bars on a terminal (rich, on stderr), fed by the core's events: the CLI's renderer.

Apart from cli.py so the command module stays a list of commands; it imports no adapter.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dsops_jupyter.events import Event, OnEvent


@contextmanager
def progress_bars() -> Iterator[OnEvent]:
    """One bar per stage, log lines dimmed above them; started on the first event, so an error
    before any work prints no empty bar line."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
    tasks: list[TaskID] = []

    def on_event(event: Event) -> None:
        if not progress.live.is_started:
            progress.start()
        if event.kind == "stage":
            if tasks:
                progress.update(tasks[-1], completed=1.0)
            tasks.append(progress.add_task(event.message, total=1.0))
        elif event.kind == "progress" and tasks and event.fraction is not None:
            progress.update(tasks[-1], completed=event.fraction)
        elif event.kind == "log":
            progress.console.print(event.message, markup=False, highlight=False, style="dim")

    try:
        yield on_event
        if tasks:
            progress.update(tasks[-1], completed=1.0)
    finally:
        if progress.live.is_started:
            progress.stop()


def print_package_result(data: dict[str, Any]) -> None:
    """What `dsops package` made, one field a line, from its JSON form."""
    version = data.get("version") or {}
    if version:
        state = "new version" if data.get("created") else "unchanged, still"
        print(f"{state} {version.get('tag')} ({version.get('short')})")
    print(f"package: {data.get('package_dir')}")
    image = data.get("image")
    if image:
        print(f"image:   {image.get('id')}")
        print(f"tags:    {', '.join(image.get('tags', []))}")
        print(f"size:    {image.get('size', 0) / 1e6:.1f} MB")
    if data.get("output"):
        print(f"archive: {data['output']}")
    if data.get("exported"):
        print(f"export:  {data['exported']['path']}")
