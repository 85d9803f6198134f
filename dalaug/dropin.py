"""``dalaug.DataLoader``: torch's ``DataLoader`` call, served by a dalaug Loader where it can be.

A script that builds ``torch.utils.data.DataLoader(dataset, ...)`` over an ``ImageFolder`` with a
torchvision or timm transform changes only the name: ``dalaug.DataLoader`` takes the same arguments
with the same meanings (``shuffle`` and ``drop_last`` default to False, as there) and returns a
:class:`~dalaug.Loader` whose DALI pipeline does what the dataset's transform says. Where dalaug
cannot serve the call (a dataset that is not image files, such as ``FakeData``; a transform, sampler
or ``collate_fn`` with no translation) it says why, once, on the ``"dalaug"`` logger, and returns
torch's own ``DataLoader``: the script runs either way, and the log says which loader it got.

Scripts that call the fully qualified name can rebind it once, after their imports::

    import dalaug
    torch.utils.data.DataLoader = dalaug.DataLoader  # every DataLoader this process builds

Use :class:`~dalaug.Loader` itself to have an untranslatable dataset refused instead.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any

import torch.utils.data
from torch.utils.data import default_collate

from dalaug.loader import UNSUPPORTED, Loader
from dalaug.translation import Untranslatable, dataset_transform, is_mixing

log = logging.getLogger("dalaug")

TORCH_DATALOADER = torch.utils.data.DataLoader  # torch's own, even after a script rebinds the name
_SIGNATURE = inspect.signature(TORCH_DATALOADER.__init__)


class DataLoader(TORCH_DATALOADER):
    """``DataLoader(dataset, batch_size=1, shuffle=False, sampler=None, ..., operators=None)``: a
    dalaug Loader, or torch's DataLoader where dalaug cannot serve the call (see the module
    docstring). The batch mixing goes in ``operators=`` or, as a script's ``collate_fn`` held it,
    in ``collate_fn=`` (torchvision's ``MixUp`` / ``CutMix`` / ``RandomChoice``, timm's ``Mixup`` /
    ``FastCollateMixup``); torch's DataLoader, where it serves, collates and then mixes with it.

    A subclass of torch's, so that ``isinstance(x, torch.utils.data.DataLoader)`` keeps working in
    a process whose scripts rebound the name; what it returns is a Loader, or an instance of this
    class that is torch's DataLoader in all but name.

    Example:
        >>> from torchvision import datasets, transforms as T
        >>> dataset = datasets.ImageFolder("data/train", T.Compose([T.RandomResizedCrop(224),
        ...     T.RandomHorizontalFlip(), T.ToTensor()]))  # doctest: +SKIP
        >>> loader = DataLoader(dataset, batch_size=64, shuffle=True, num_workers=8)  # doctest: +SKIP
    """

    def __new__(cls, *args: Any, operators: Any = None, **kwargs: Any):
        try:
            bound = _SIGNATURE.bind(None, *args, **kwargs)
        except TypeError as error:
            raise TypeError(f"DataLoader: {error}") from None
        given = {name: value for name, value in bound.arguments.items() if name not in ("self", "kwargs")}
        given.update(bound.arguments.get("kwargs", {}))
        mixing = operators if operators is not None else given.get("collate_fn")
        if operators is not None and given.get("collate_fn") is not None:
            raise TypeError("DataLoader: give operators= or a mixing collate_fn=, not both")
        reason = _unservable(given)
        if reason is None:
            try:
                return _loader({**given, "operators": operators} if operators is not None else given)
            except Untranslatable as error:
                reason = str(error)
        log.warning("dalaug.DataLoader: %s; this one is torch's DataLoader", reason)
        instance = super().__new__(cls)  # an instance of cls: Python then runs torch's __init__ on it
        instance._mixing = mixing
        return instance

    def __init__(self, *args: Any, operators: Any = None, **kwargs: Any) -> None:
        # torch's DataLoader, mixing as the script's collate_fn did: default_collate, then the
        # mixing object on the batch (torchvision's references, v2's MixUp / CutMix). timm's
        # FastCollateMixup is a collate_fn itself.
        mixing = self.__dict__.pop("_mixing", None)
        if mixing is not None and is_mixing(mixing) and type(mixing).__name__ != "FastCollateMixup":
            kwargs["collate_fn"] = functools.partial(_collate_then_mix, mixing)
        super().__init__(*args, **kwargs)


def _collate_then_mix(mixing: Any, batch: list) -> Any:
    return mixing(*default_collate(batch))


def _unservable(given: dict) -> str | None:
    """Why a dalaug Loader cannot take these DataLoader arguments, or None."""
    if is_mixing(given.get("collate_fn")):
        return None
    for name, (default, advice) in UNSUPPORTED.items():
        if name in given and given[name] != default:
            return f"{name}={given[name]!r} is not translated ({advice})"
    return None


def _loader(given: dict) -> Loader:
    dataset = given.pop("dataset")
    batch_size = given.pop("batch_size", 1)
    if batch_size is None:
        raise Untranslatable("batch_size=None (unbatched samples): dalaug yields batches")
    if isinstance(dataset, torch.utils.data.Dataset) and dataset_transform(dataset) is None:
        raise Untranslatable(f"dataset: {type(dataset).__name__} has no transform (images of many sizes)")
    # DataLoader's defaults, which a Loader reads otherwise: no shuffle (unless a sampler says), the
    # last partial batch kept.
    shuffle = given.pop("shuffle", None)
    if given.get("sampler") is None:
        shuffle = bool(shuffle)
    elif not shuffle:
        shuffle = None  # the sampler says
    return Loader(dataset, batch_size, shuffle=shuffle, drop_last=given.pop("drop_last", False), **given)


__all__ = ["DataLoader", "TORCH_DATALOADER"]
