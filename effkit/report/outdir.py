"""The output folder's policy: never replace earlier results or write into someone else's folder.

`check_out_dir` refuses a folder before anything is written; `claim_out_dir` creates it, or clears what an earlier
effkit run there made (only the files its report names); `fresh_dir` picks a new numbered folder by default.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from ..types import Report
from .plots import ALL_PLOTS as PLOT_FILES
from .render import REPORT_HTML, REPORT_JSON, REPORT_MD

ARTIFACTS = "artifacts"
LATENCY_INPUT = "latency_input.npy"  # the samples every latency figure was timed on (effkit bench re-times them)
TEST_SAMPLE = "test_sample.npz"  # the first test samples and labels: `effkit bundle` takes its golden inputs here
TEST_SAMPLE_COUNT = 256  # how many it keeps: a bundle's golden inputs


def check_out_dir(out_dir: Path, *, overwrite: bool) -> None:
    """Refuse an output folder that is a file, cannot be written, or holds earlier results (unless overwriting)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} is a file; expected a folder")
    if (out_dir / REPORT_JSON).exists() and not overwrite:
        raise InputError(
            f"{out_dir} already holds effkit results ({REPORT_JSON}); pass --overwrite to replace them "
            "or choose another --out"
        )
    if out_dir.is_dir() and not overwrite and not (out_dir / REPORT_JSON).exists() and any(out_dir.iterdir()):
        raise InputError(
            f"{out_dir} is not empty and holds no effkit report; choose an empty or new --out "
            "(or pass --overwrite to write into it)"
        )
    ancestor = out_dir
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"--out {out_dir} lies under {ancestor}, which is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"cannot write to {ancestor}; choose another --out")


def claim_out_dir(out_dir: Path) -> None:
    """Create the output folder, removing what an earlier effkit run there made (its report says what).

    Only reachable for a folder with a report when overwriting (`check_out_dir`). Files the report does not name
    are never touched.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create {out_dir}: {error.strerror}") from None
    previous = out_dir / REPORT_JSON
    if not previous.exists():
        return
    try:
        report = Report.from_json(previous.read_text(encoding="utf-8"))
        named = [v.path for v in report.variants if v.path] + [report.model.get("path") or ""]
        named += [v.micro["lut"].get("path") or "" for v in report.variants if v.micro and v.micro.get("lut")]
    except (ValueError, KeyError, TypeError):
        named = []  # an unreadable report: remove only the files every run writes
    ours = [out_dir / name for name in (REPORT_JSON, REPORT_MD, REPORT_HTML, LATENCY_INPUT, TEST_SAMPLE, *PLOT_FILES)]
    for name in named:
        path = (out_dir / name).resolve()
        if path.is_relative_to(out_dir.resolve()):  # a user's model elsewhere is named too: leave it
            ours.append(path)
    for path in ours:
        if path.is_file():
            path.unlink()
    if (out_dir / ARTIFACTS).is_dir() and not any((out_dir / ARTIFACTS).iterdir()):
        (out_dir / ARTIFACTS).rmdir()


def fresh_dir(path: Path) -> Path:
    """`path`, or `path-2`, `path-3`... : the first that is new or empty, so earlier results are never replaced."""
    candidate, number = path, 1
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        number += 1
        candidate = path.with_name(f"{path.name}-{number}")
    return candidate


def shown_path(path: Path, out_dir: Path) -> str:
    """Paths inside the output folder are recorded relative to it; others (the user's model) as given."""
    try:
        return str(Path(path).relative_to(out_dir))
    except ValueError:
        return str(path)
