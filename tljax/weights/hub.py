"""Weights by hub name, through huggingface_hub (its cache, HF_HOME / HF_HUB_CACHE,
revisions, HF_TOKEN and HF_HUB_OFFLINE):

  hf:ORG/NAME[@REVISION]   a Hugging Face model repo, read as a HF model folder
                           (config.json + model.safetensors or pytorch_model.bin);
  timm:NAME[@REVISION]     timm's weights on the hub (repo timm/NAME), its model.safetensors.

Only the files a loader reads are fetched. Offline, a repo already in the cache loads; one
that is not is a one-line error naming the repo and how to pre-download it.
"""
import os

from tljax.errors import UserError
from tljax.formats.convert import HF_WEIGHTS

PREFIXES = ("hf:", "timm:")
_CONFIGS = ["*.json"]


def is_hub_name(source):
    return str(source).startswith(PREFIXES)


def repo_of(source):
    """(repo id, revision or None) of a hub name."""
    kind, _, name = str(source).partition(":")
    name, _, revision = name.partition("@")
    if not name or (kind == "hf" and name.count("/") != 1) or (kind == "timm" and "/" in name):
        raise UserError(f"model.init={source!r}: write hf:ORG/NAME[@REVISION] or "
                        f"timm:NAME[@REVISION] (e.g. hf:facebook/dinov2-base, "
                        f"timm:vit_base_patch16_224.augreg2_in21k_ft_in1k)")
    return (name if kind == "hf" else f"timm/{name}"), (revision or None)


def resolve(source):
    """A local path for a hub name: the snapshot folder (hf:) or its model.safetensors (timm:)."""
    import huggingface_hub
    from huggingface_hub import constants, errors

    repo_id, revision = repo_of(source)
    folder, reasons = None, []
    for weights_file in HF_WEIGHTS:
        try:
            folder = huggingface_hub.snapshot_download(
                repo_id, revision=revision, allow_patterns=_CONFIGS + [weights_file])
        except (errors.HfHubHTTPError, errors.LocalEntryNotFoundError, errors.HFValidationError,
                OSError, ValueError) as e:
            first = str(e).splitlines()[0].split(". ")[0] if str(e) else type(e).__name__
            reasons.append(first[:140])
            break
        if os.path.exists(os.path.join(folder, weights_file)):
            break
    if folder is None:
        raise UserError(
            f"{source}: {repo_id}{'@' + revision if revision else ''} is not in the Hugging Face "
            f"cache ({constants.HF_HUB_CACHE}) and could not be downloaded ({reasons[0]}); where "
            f"there is internet run `hf download {repo_id}` and bring that cache here (or point "
            f"HF_HOME at it)")
    found = [f for f in HF_WEIGHTS if os.path.exists(os.path.join(folder, f))]
    if not found:
        raise UserError(f"{source}: {repo_id} holds neither {' nor '.join(HF_WEIGHTS)}: it is not a "
                        f"model tljax can read")
    return folder if source.startswith("hf:") else os.path.join(folder, found[0])
