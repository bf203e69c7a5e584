"""One hub snapshot call for everything nla fetches: a target model's config, or an NLA's checkpoint folder.

Repositories go into huggingface_hub's cache (HF_HOME, HF_HUB_CACHE), so they are downloaded once;
with HF_HUB_OFFLINE=1 a cached copy is used without any network call, and a missing one fails at
once in one line.
"""

from __future__ import annotations

import os
from pathlib import Path

from nla.errors import NLAError

# What a checkpoint needs from its repository: config, weights, tokenizer, chat template, sidecar.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.yaml", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
HUB_IGNORE = ["original/*"]  # Llama repositories also carry their Meta-format weights


def _offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "")
    return constants.HF_HUB_OFFLINE or flag.upper() in ("1", "ON", "YES", "TRUE")


def download(repo_id: str, patterns: list[str] = HUB_PATTERNS) -> Path:
    """The local snapshot of a hub repository (its files matching `patterns`), fetched once into the Hugging
    Face cache. It asks the hub once (no retries): a missing repository or no network is one line at once."""
    try:
        import huggingface_hub
        from huggingface_hub import errors
    except ImportError as err:
        raise NLAError(f"reading {repo_id} from the hub needs huggingface_hub; pip install 'nla[hub]'") from err
    offline = _offline()
    try:
        folder = huggingface_hub.snapshot_download(repo_id, allow_patterns=patterns, ignore_patterns=HUB_IGNORE,
                                                   local_files_only=offline)
    except errors.GatedRepoError as err:
        raise NLAError(f"{repo_id} is gated: accept its terms on huggingface.co and log in (hf auth login)") from err
    except errors.RepositoryNotFoundError as err:
        raise NLAError(f"hub repository {repo_id} not found (or private: log in with hf auth login); "
                       "check the id") from err
    except errors.RevisionNotFoundError as err:
        raise NLAError(f"hub repository {repo_id} has no such revision") from err
    except (errors.LocalEntryNotFoundError, errors.IncompleteSnapshotError) as err:
        if offline:
            raise NLAError(f"{repo_id} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; download it "
                           "once online (unset HF_HUB_OFFLINE), or pass a local folder") from err
        raise NLAError(f"cannot reach the Hugging Face hub to download {repo_id}, and no cached copy exists; "
                       "check your network (or HF_ENDPOINT), or pass a local folder") from err
    except (errors.HfHubHTTPError, OSError) as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise NLAError(f"could not download {repo_id} from the hub ({first_line})") from err
    return Path(folder)
