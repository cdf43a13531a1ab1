"""Uploading an exported folder to the Hugging Face Hub with huggingface_hub (the token of `hf auth login` or
HF_TOKEN)."""

import sys
from pathlib import Path
from typing import Optional

from litgpt_inheritune.errors import fail


def push_folder(
    folder: Path, repo_id: str, private: Optional[bool] = None, revision: Optional[str] = None, commit_message: str = ""
) -> str:
    """Creates ``repo_id`` (a model repository; an existing one is kept) and uploads ``folder`` into it, on the branch
    ``revision`` when given (created from main when missing). Returns the commit's URL. Without a token or network:
    one line naming the cause; the folder is left as it is."""
    from huggingface_hub import HfApi, get_token

    command = f"hf upload {repo_id} {folder}" + (f" --revision {revision}" if revision else "")
    retry = f"the folder {folder} is complete; upload it later with `{command}{' --private' if private else ''}`"
    if get_token() is None:
        fail(f"--push_to_hub {repo_id}: no Hugging Face token (run `hf auth login` or set HF_TOKEN); {retry}")
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="model",
            revision=revision,
            commit_message=commit_message,
        )
    except Exception as error:  # no network, a rejected token, no write access, ...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        fail(f"--push_to_hub {repo_id} failed ({type(error).__name__}: {reason}); {retry}")
    url = getattr(commit, "commit_url", None) or str(commit)
    print(f"Pushed {folder} to https://huggingface.co/{repo_id} ({url})", file=sys.stderr)
    return url
