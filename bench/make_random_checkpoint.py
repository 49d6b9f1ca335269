"""Write a LAION-CLAP checkpoint with random weights, in the official file layout.

The file has the official layout (``{'epoch', 'name', 'state_dict', 'optimizer'}``, keys prefixed
``module.``, RoBERTa text branch included) so it exercises exactly the loading path of a real
checkpoint, without any download. Random weights give near-identical vectors for any audio: use
such files to test plumbing, speed and determinism, never tagging quality.

    python bench/make_random_checkpoint.py ckpt.pt                 # HTSAT-tiny (fast, ~600 MB)
    python bench/make_random_checkpoint.py ckpt.pt --amodel HTSAT-base
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["write_random_checkpoint"]


def write_random_checkpoint(
    path: str | os.PathLike,
    *,
    amodel: str = "HTSAT-tiny",
    enable_fusion: bool = False,
    seed: int = 0,
    position_ids: bool = True,
    text: bool = True,
) -> Path:
    """Build a CLAP model with seeded random weights offline and save it in the official layout.

    Parameters
    ----------
    path : path of the ``.pt`` file to write
    amodel : "HTSAT-tiny" | "HTSAT-base" | "HTSAT-large"
    enable_fusion : build the 2-D fusion variant
    seed : torch seed for the weights
    position_ids : include ``text_branch.embeddings.position_ids`` (older official files have it)
    text : include the RoBERTa text branch (the official files do)
    """
    import torch

    from clapknn.encoders.clap import build_model, save_checkpoint

    torch.manual_seed(seed)
    model, _ = build_model(amodel, enable_fusion=enable_fusion, text=text)
    return save_checkpoint(model, path, position_ids=position_ids, name=f"random-{amodel}-seed{seed}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path")
    p.add_argument("--amodel", default="HTSAT-tiny", choices=["HTSAT-tiny", "HTSAT-base", "HTSAT-large"])
    p.add_argument("--fusion", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-position-ids", action="store_true")
    p.add_argument("--no-text", action="store_true")
    a = p.parse_args(argv)
    out = write_random_checkpoint(
        a.path, amodel=a.amodel, enable_fusion=a.fusion, seed=a.seed,
        position_ids=not a.no_position_ids, text=not a.no_text,
    )
    print(f"wrote {out} ({out.stat().st_size / 1e6:.0f} MB, {a.amodel}, fusion={a.fusion})")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
