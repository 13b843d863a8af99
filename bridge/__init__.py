"""Where the models meet each other and the outside world.

- ``harvest``: the frozen primary's pooled vectors, into the device buffer or to the host.
- ``steering``: the pure ``edit_feature`` and the hook modes; ``steered_completion``:
  steering shown as legal builds, before and after, slot by slot.
- ``causal``: the causal check of feature explanations (edited builds run again).
- ``splatnlp`` / ``torch_pickle`` / ``import_splatnlp``: SplatNLP run directories,
  read without torch (``bridge.load_splatnlp(run_dir, sae_path)``); ``fetch_splatnlp``
  (``download``, ``splatnlp_published``): its published files, downloaded and imported.
- ``export_saelens``: SAELens's on-disk format.
"""

from bridge.splatnlp import load_splatnlp

__all__ = ["load_splatnlp"]
