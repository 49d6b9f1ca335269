"""laion-clap without its side effects: no hub calls, no undeclared imports left behind.

Importing ``laion_clap`` calls ``from_pretrained`` for three tokenizers and building a model calls
``RobertaModel.from_pretrained('roberta-base')``: both happen inside :func:`_laion_guard`, which swaps
those classmethods for offline stand-ins and puts the originals back on exit. When no working
torchvision is installed, a stand-in module is registered only while ``laion_clap`` is imported;
the entry ``laion_clap`` adds to :data:`sys.path` is removed again too.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import logging
import os
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...errors import CheckpointError, ClapknnError, ParameterError
from .checkpoints import AMODELS, FUSION_TYPE, ROBERTA_CONFIG, ROBERTA_REPOS

logger = logging.getLogger("clapknn.encoders.clap")

# --------------------------------------------------------------------------------------------------
# Importing laion_clap and building its model without network access
# --------------------------------------------------------------------------------------------------

_LOCK = threading.RLock()
_MISSING = object()


class _NotLoaded:
    """Stands in for a tokenizer laion_clap builds at import; clapknn never uses those."""

    def __init__(self, what: str) -> None:
        self._what = what

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise ClapknnError(
            f"laion_clap's {self._what} was not loaded (clapknn imports laion_clap offline); "
            "use ClapEncoder.embed_text for text"
        )


class _TextBranchPlaceholder:
    """What CLAP's constructor sees instead of RoBERTa until text is needed (it reads one width)."""

    def __init__(self, width: int = 768) -> None:
        import torch

        self.embeddings = types.SimpleNamespace(word_embeddings=types.SimpleNamespace(weight=torch.empty(0, width)))


def _torchvision_standin() -> dict[str, types.ModuleType]:
    """Minimal modules for the names laion_clap imports from torchvision at import time.

    Only fusion training code would use them: each raises a clear error if called.
    """

    def unavailable(name: str) -> type:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ClapknnError(f"torchvision.{name} is not available (clapknn loaded laion_clap without torchvision)")

        return type(name, (), {"__init__": __init__})

    mods: dict[str, types.ModuleType] = {}
    for name in ("torchvision", "torchvision.datasets", "torchvision.transforms", "torchvision.ops", "torchvision.ops.misc"):
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
        mod.__file__ = None
        mods[name] = mod
    for attr in ("Normalize", "Compose", "RandomResizedCrop", "InterpolationMode", "ToTensor", "Resize", "CenterCrop"):
        setattr(mods["torchvision.transforms"], attr, unavailable(f"transforms.{attr}"))
    mods["torchvision.ops.misc"].FrozenBatchNorm2d = unavailable("ops.misc.FrozenBatchNorm2d")
    mods["torchvision"].datasets = mods["torchvision.datasets"]
    mods["torchvision"].transforms = mods["torchvision.transforms"]
    mods["torchvision"].ops = mods["torchvision.ops"]
    mods["torchvision.ops"].misc = mods["torchvision.ops.misc"]
    return mods


def _torchvision_works() -> bool:
    import importlib.util

    if "torchvision" in sys.modules:
        return True
    if importlib.util.find_spec("torchvision") is None:
        return False
    before = set(sys.modules)
    try:
        import torchvision.ops.misc
        import torchvision.transforms  # noqa: F401

        return True
    except Exception:  # noqa: BLE001 - e.g. "operator torchvision::nms does not exist" beside CPU torch
        for name in set(sys.modules) - before:
            if name == "torchvision" or name.startswith("torchvision."):
                del sys.modules[name]
        return False


@contextlib.contextmanager
def _laion_guard(text_factory=None) -> Iterator[None]:
    """Swap every hub-reaching ``from_pretrained`` laion_clap calls for an offline stand-in.

    Tokenizers become :class:`_NotLoaded`; ``RobertaModel.from_pretrained`` returns
    ``text_factory()`` (a placeholder by default). Everything is restored on exit, and the context
    is serialised by a lock so no other thread sees the swapped methods for longer than needed.
    """
    from transformers import (
        BartModel,
        BartTokenizer,
        BertModel,
        BertTokenizer,
        RobertaModel,
        RobertaTokenizer,
    )

    def tokenizer_stub(cls, name_or_path=None, *args, **kwargs):
        return _NotLoaded(f"{cls.__name__}({name_or_path!r})")

    def roberta_stub(cls, name_or_path=None, *args, **kwargs):
        return text_factory() if text_factory is not None else _TextBranchPlaceholder()

    def refuse(cls, name_or_path=None, *args, **kwargs):
        raise CheckpointError(f"clapknn supports the RoBERTa text branch only, not {cls.__name__}({name_or_path!r})")

    swaps = [
        (BertTokenizer, classmethod(tokenizer_stub)),
        (RobertaTokenizer, classmethod(tokenizer_stub)),
        (BartTokenizer, classmethod(tokenizer_stub)),
        (RobertaModel, classmethod(roberta_stub)),
        (BertModel, classmethod(refuse)),
        (BartModel, classmethod(refuse)),
    ]
    with _LOCK:
        saved = []
        try:
            for cls, stub in swaps:
                if any(c is cls for c, _ in saved):
                    continue  # BartTokenizer may be RobertaTokenizer under another name
                saved.append((cls, cls.__dict__.get("from_pretrained", _MISSING)))
                cls.from_pretrained = stub
            yield
        finally:
            for cls, original in reversed(saved):
                if original is _MISSING:
                    del cls.from_pretrained
                else:
                    cls.from_pretrained = original


def _import_laion_clap() -> types.ModuleType:
    """Import laion_clap without network access, torchvision or a lasting sys.path entry."""
    with _LOCK:
        if "laion_clap" in sys.modules:
            return sys.modules["laion_clap"]
        import importlib.util
        import warnings

        import transformers  # noqa: F401 - import first, so it never sees the torchvision stand-in

        if importlib.util.find_spec("laion_clap") is None:
            raise ClapknnError("the CLAP encoder needs the laion-clap package: pip install laion-clap")
        path_before = list(sys.path)
        standin = {} if _torchvision_works() else _torchvision_standin()
        added = [n for n in standin if n not in sys.modules]
        for n in added:
            sys.modules[n] = standin[n]
        try:
            with _laion_guard(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import laion_clap
        finally:
            for n in added:
                sys.modules.pop(n, None)
            # laion_clap appends its own folder to sys.path; its modules are imported by now.
            for entry in [p for p in sys.path if p not in path_before]:
                sys.path.remove(entry)
        return laion_clap


def roberta_model():
    from transformers import RobertaConfig, RobertaModel

    return RobertaModel(RobertaConfig(**ROBERTA_CONFIG))


def build_model(amodel: str = "HTSAT-tiny", *, enable_fusion: bool = False, text: bool = False, device: str = "cpu"):
    """Build laion_clap's ``CLAP`` model (random weights) offline; returns ``(model, model_cfg)``.

    ``text=False`` leaves the RoBERTa text branch out (a placeholder without weights); ``text=True``
    builds it from roberta-base's configuration.
    """
    import warnings

    import torch

    if amodel not in AMODELS:
        raise ParameterError(f"unknown CLAP audio model {amodel!r}; choose one of {', '.join(AMODELS)}")
    _import_laion_clap()
    from clap_module import create_model

    with _laion_guard(roberta_model if text else None), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*meshgrid.*")
        kwargs = {"fusion_type": FUSION_TYPE} if enable_fusion else {}
        model, cfg = create_model(
            amodel, "roberta", precision="fp32", device=torch.device(device), enable_fusion=enable_fusion, **kwargs
        )
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, cfg


def save_checkpoint(model, path: str | os.PathLike, *, position_ids: bool = True, name: str = "clapknn") -> Path:
    """Write ``model`` (a laion_clap ``CLAP``) in the official checkpoint layout.

    ``{'epoch', 'name', 'state_dict', 'optimizer'}`` with every key prefixed ``module.``, plus
    ``text_branch.embeddings.position_ids`` when ``position_ids`` (as files written by
    transformers < 4.31 have) and the model has a text branch.
    """
    import torch

    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    if position_ids and any(k.startswith("module.text_branch.") for k in state):
        state["module.text_branch.embeddings.position_ids"] = torch.arange(ROBERTA_CONFIG["max_position_embeddings"])[None]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "name": name, "state_dict": state, "optimizer": {}}, path)
    return path




class TextBranchState:
    """Lets :meth:`ClapEncoder._load_weights` check a bare text model under ``text_branch.`` keys."""

    def __init__(self, text_branch) -> None:
        self.text_branch = text_branch

    def state_dict(self) -> dict[str, Any]:
        return {f"text_branch.{k}": v for k, v in self.text_branch.state_dict().items()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True):
        return self.text_branch.load_state_dict({k[len("text_branch."):]: v for k, v in state.items()}, strict=strict)


def has_tokenizer_files(folder: Path) -> bool:
    return folder.is_dir() and (
        ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()) or (folder / "tokenizer.json").is_file()
    )


def hf_cached_tokenizer() -> Path | None:
    """The snapshot folder of roberta-base's tokenizer in the local Hugging Face cache, if there."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for repo in ROBERTA_REPOS:
        try:
            vocab = try_to_load_from_cache(repo, "vocab.json")
            merges = try_to_load_from_cache(repo, "merges.txt")
        except Exception as exc:  # noqa: BLE001 - a malformed cache is the same as no cache
            logger.debug("Hugging Face cache lookup for %s failed: %s", repo, exc)
            continue
        if isinstance(vocab, str) and isinstance(merges, str):
            return Path(vocab).parent
    return None
