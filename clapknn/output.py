"""Results out: a readable table on screen, and CSV / JSON / parquet files chosen by extension."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import ParameterError, first_line
from .options import check_output_path

__all__ = ["OUTPUT_FORMATS", "check_table_path", "write_table", "read_table", "format_table"]

#: File extensions :func:`write_table` understands.
OUTPUT_FORMATS = (".csv", ".json", ".parquet")


def check_table_path(path: str | Path) -> Path:
    """``path`` if a table can be written there: a known extension, in a folder that exists (no
    folder is created). Commands call it before their work, so a typo costs nothing.

    Raises
    ------
    ParameterError
    """
    path = check_output_path(path)
    ext = path.suffix.lower()
    if ext not in OUTPUT_FORMATS:
        raise ParameterError(f"{path}: unknown output format {ext or '(none)'}; use one of {', '.join(OUTPUT_FORMATS)}")
    return path


def write_table(df, path: str | Path) -> Path:
    """Write a DataFrame to ``path``; the format follows the extension (``.csv``, ``.json``,
    ``.parquet``). The file is written to a temporary name first and renamed, so a reader never
    sees half a file."""
    path = check_table_path(path)
    ext = path.suffix.lower()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if ext == ".csv":
            df.to_csv(tmp, index=False)
        elif ext == ".json":
            records = json.loads(df.to_json(orient="records", double_precision=6))
            tmp.write_text(json.dumps(records, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        else:
            df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_table(path: str | Path):
    """Read a table :func:`write_table` wrote (the format follows the extension).

    Raises
    ------
    ParameterError
        Missing file, unknown extension, or a file that cannot be read.
    """
    import pandas as pd

    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise ParameterError(f"{path}: no such file")
    ext = p.suffix.lower()
    if ext not in OUTPUT_FORMATS:
        raise ParameterError(f"{path}: unknown table format {ext or '(none)'}; use one of {', '.join(OUTPUT_FORMATS)}")
    try:
        if ext == ".csv":
            return pd.read_csv(p, dtype={"path": str, "tags": str, "top": str}, keep_default_na=False)
        if ext == ".json":
            return pd.DataFrame(json.loads(p.read_text(encoding="utf-8")))
        from .store import read_parquet

        return read_parquet(p).to_pandas(use_threads=False)
    except Exception as exc:  # noqa: BLE001 - pandas/pyarrow/json raise many types
        raise ParameterError(f"{path}: cannot read the table ({first_line(exc)})") from exc


def _short(path: str, width: int = 48) -> str:
    return path if len(path) <= width else "…" + path[-(width - 1):]


def format_table(df, *, columns: list[str] | None = None, path_width: int = 48, float_digits: int = 2) -> str:
    """A plain-text table of ``df`` (paths shortened from the left, floats rounded)."""
    view = df[columns] if columns else df
    view = view.copy()
    for col in view.columns:
        if view[col].dtype == object and col in ("path", "neighbor"):
            view[col] = [_short(str(v), path_width) for v in view[col]]
    return view.to_string(index=False, float_format=lambda x: f"{x:.{float_digits}f}")
