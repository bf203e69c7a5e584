"""Where an NLA's two checkpoints are: a local NLA folder, two released folders, or two hub repositories.

    resolve_nla("runs/nla")                                   # ours: av/ + ar/ (or av_adapter/ + ar_adapter/)
    resolve_nla("kitft/nla-qwen2.5-7b-L20")                   # a prefix: kitft/nla-qwen2.5-7b-L20-av and -ar
    resolve_nla(av="kitft/Llama-3.3-70B-NLA-L53-av", ar="./my-ar")   # each a hub id or a local folder

Hub repositories are fetched with `huggingface_hub.snapshot_download` into its cache (HF_HOME,
HF_HUB_CACHE), so they are downloaded once; with HF_HUB_OFFLINE=1 an already cached copy is
used without any network call, and a missing one fails at once in one line. huggingface_hub
comes with transformers; the `hub` extra pins it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nla.autoencoder.meta import read_model_meta
from nla.autoencoder.shipped import resolve as resolve_default
from nla.errors import NLAError
from nla.layout import CALIBRATION_FILE, META_FILE
from nla.models.hub import download
from nla.registry import known, registry, source_of

AV_DIR, AR_DIR = "av", "ar"


@dataclass(frozen=True)
class NLASource:
    av: Path  # the AV's released-layout folder
    ar: Path  # the AR's
    run: Path | None = None  # an nla run folder (it may also hold LoRA adapters); None for a released pair
    label: str = ""  # what the user passed, for messages and records


def looks_like_hub_id(spec: str, flag: str) -> bool:
    """org/name, not a path: one slash, no leading ./ or /, nothing on disk by that name. A missing folder
    inside a local one (runs/nla where runs/ exists) is a typo, not a hub id: that is an error here."""
    parts = spec.split("/")
    if len(parts) != 2 or not all(parts) or spec.startswith((".", "/", "~")) or Path(spec).expanduser().exists():
        return False
    if Path(parts[0]).is_dir():
        raise NLAError(f"{spec} not found (and {parts[0]}/ is a local folder, so it is not read as a hub id); "
                       f"check {flag}")
    return True


def checkpoint_folder(spec: str | Path, role: str) -> Path:
    """One released checkpoint: a local folder holding nla_meta.yaml, or a hub id downloaded once."""
    flag = f"--nla-{role}"
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / META_FILE).exists():
            return path
        half = role_folder(path, role)
        if half and (half / META_FILE).exists():  # an nla folder's half, given by its parent
            return half
        raise NLAError(f"{path} has no {META_FILE}; {flag} takes an {role.upper()} checkpoint folder or hub id")
    if path.exists():
        raise NLAError(f"{path} is a file; {flag} takes an {role.upper()} checkpoint folder or hub id")
    if not looks_like_hub_id(str(spec), flag):
        raise NLAError(f"{spec} is neither a folder nor a hub id (org/name); check {flag}")
    folder = download(str(spec))
    if not (folder / META_FILE).exists():
        raise NLAError(f"hub repository {spec} has no {META_FILE}; it is not an NLA checkpoint")
    return folder


def role_folder(run: Path, role: str) -> Path | None:
    """Where an nla folder keeps its AV or AR: the released folder (av/), else the LoRA adapter (av_adapter/)
    that a LoRA run writes instead; None if neither is there."""
    if (run / role).is_dir():
        return run / role
    adapter = run / f"{role}_adapter"
    return adapter if (adapter / META_FILE).exists() else None


def resolve_nla(nla: str | Path | None = None, *, av: str | Path | None = None,
                ar: str | Path | None = None) -> NLASource:
    """An NLA given as one folder or hub prefix (`nla`), or as its two halves (`av` and `ar`)."""
    if av is not None or ar is not None:
        if nla is not None:
            raise NLAError("pass either --nla or --nla-av with --nla-ar, not both")
        if av is None or ar is None:
            raise NLAError("--nla-av and --nla-ar go together: pass the AV and the AR (folders or hub ids)")
        return NLASource(checkpoint_folder(av, "av"), checkpoint_folder(ar, "ar"), None, f"{av} + {ar}")
    if nla is None:
        nla = "default"  # no --nla: the NLA shipped in the package
    nla = source_of(str(nla)) if not Path(str(nla)).expanduser().exists() else nla  # a registry name
    path = resolve_default(nla).expanduser()  # "default": the NLA shipped in the package
    if path.is_dir():
        av, ar = role_folder(path, AV_DIR), role_folder(path, AR_DIR)
        if av and ar:
            return NLASource(av, ar, path, str(nla))
        if (path / META_FILE).exists():
            raise NLAError(f"{path} is one checkpoint, not an NLA; pass it with --nla-av or --nla-ar and its "
                           "other half with the other")
        raise NLAError(f"{path} is not an NLA folder: it needs {AV_DIR}/ and {AR_DIR}/ checkpoint folders (or "
                       f"their LoRA adapters, {AV_DIR}_adapter/ and {AR_DIR}_adapter/)")
    spec = str(nla)
    if not looks_like_hub_id(spec, "--nla"):
        raise NLAError(f"{spec} is neither an NLA folder nor a hub prefix (org/name, expanded to org/name-av "
                       "and org/name-ar); check --nla")
    prefix = spec.removesuffix("-av").removesuffix("-ar")  # one half given: both are meant
    try:
        return NLASource(checkpoint_folder(f"{prefix}-av", "av"), checkpoint_folder(f"{prefix}-ar", "ar"), None,
                         prefix)
    except NLAError as err:  # a mistyped local path reads like a hub prefix: say first that no such folder exists
        raise NLAError(f"{spec} not found: no such folder here, and as a hub prefix: {err}") from err


def nla_facts(spec: str) -> dict:
    """What is known of an NLA without loading or downloading it: its registry entry (target, layer, published
    FVE, memory), and for a folder on this machine what its sidecars say."""
    facts = {"nla": spec, **(known(spec) or known(source_of(spec)) or {})}
    folder = resolve_default(spec).expanduser()
    av, ar = (role_folder(folder, AV_DIR), role_folder(folder, AR_DIR)) if folder.is_dir() else (None, None)
    if av is None or ar is None:
        if len(facts) == 1:
            raise NLAError(f"{spec} is neither a known NLA ({', '.join(registry())}) nor an NLA folder here; "
                           "check --nla")
        return facts
    meta = read_model_meta(av)
    facts.update(folder=str(folder), base_checkpoint=meta.base_checkpoint, layer=meta.extraction_layer_index,
                 d_model=meta.d_model, stage=meta.stage, injection=meta.injection or {"site": "embedding"},
                 injection_scale=meta.injection_scale, created_at=meta.created_at,
                 calibrated=(folder / CALIBRATION_FILE).exists())
    return facts
