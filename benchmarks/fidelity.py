"""Check that the torch re-creation reproduces a SplatNLP run directory's recorded outputs.

A fixture holds a checkpoint in the original's format (``model.pth``, ``sae.pth``) and
outputs on a few builds (``cases.npz``). Loading with ``strict=True`` checks every
parameter name and shape; the outputs check the computation. The default is the
repository's fixture (``tests/fixtures/splatnlp_small``, made by this re-creation:
there the check guards it against drift); pass another run directory, such as one
whose outputs came from the original, to check against that.

    python benchmarks/fidelity.py [--fixture DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_FIXTURE = os.path.join(REPO_ROOT, "tests", "fixtures", "splatnlp_small")


def check_against_original(fixture_dir: str = DEFAULT_FIXTURE) -> dict:
    """Max abs differences of pooled, logits and SAE pre/post/recon vs the fixture."""
    import torch

    from benchmarks.original_torch import SetCompletionModel, SparseAutoencoder

    if not os.path.isdir(fixture_dir):
        return {"fixture": fixture_dir, "skipped": "fixture directory not found"}
    with open(os.path.join(fixture_dir, "model_params.json")) as f:
        params = json.load(f)
    model = SetCompletionModel(**params)
    model.load_state_dict(torch.load(os.path.join(fixture_dir, "model.pth"),
                                     map_location="cpu", weights_only=True), strict=True)
    model.eval()
    sae_state = torch.load(os.path.join(fixture_dir, "sae.pth"), map_location="cpu",
                           weights_only=True)
    hidden, d_in = sae_state["encoder.weight"].shape
    sae = SparseAutoencoder(d_in, hidden / d_in)
    sae.load_state_dict(sae_state, strict=True)
    cases = np.load(os.path.join(fixture_dir, "cases.npz"))
    with torch.inference_mode():
        pooled = model.pooled(torch.from_numpy(cases["tokens"]),
                              torch.from_numpy(cases["weapons"]),
                              torch.from_numpy(cases["key_padding_mask"]))
        logits = model.output_layer(pooled)
        x = torch.from_numpy(cases["pooled"])
        pre, post = sae.encode(x)
        recon, _ = sae(x)
    got = {"pooled": pooled, "logits": logits, "sae_pre": pre, "sae_post": post,
           "sae_recon": recon}
    diffs = {k: float(np.max(np.abs(v.numpy() - cases[k]))) for k, v in got.items()}
    return {"fixture": fixture_dir, "max_abs_diff": diffs,
            "ok": all(d <= 1e-5 for d in diffs.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixture", default=DEFAULT_FIXTURE,
                        help="SplatNLP run directory with cases.npz (default: %(default)s)")
    args = parser.parse_args(argv)
    if REPO_ROOT not in sys.path:  # run as a script: the repository root holds benchmarks/
        sys.path.insert(0, REPO_ROOT)
    result = check_against_original(args.fixture)
    print(json.dumps(result, indent=2))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
