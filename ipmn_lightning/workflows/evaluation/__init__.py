"""``ipmn evaluate``: the paper's evaluation (Tables 2, 3, 4, 10, Fig. 5/6) of a trained pipeline.

The numbers come from the phase modules' own ``test_step`` (run by a ``Trainer`` on the test or validation
split), so the report measures exactly what training logs:

- Table 2 from :class:`~ipmn_lightning.modules.InvertibleMaskModule` (PSNR/SSIM/LPIPS of the three image
  pairs, float and 8-bit);
- Tables 3, 4 and 10 and the false-positive rates from
  :class:`~ipmn_lightning.modules.ExtractorEnhanceModule`, built from the phase-1, phase-2 and stealer
  checkpoints twice: once with the phase-1 R (the "initial" extractor) and once with the enhanced R;
- Table 11 (privacy, SR_P) with an offline face recogniser (dlib's, the ``faces`` extra): x_wmf as the
  sender shares it (8-bit), without attack and under the paper's three attacks, x_m for reference, and
  the utility (x'_p recognised as x_p).

Outputs (written atomically): ``report.md`` (each table beside the paper's numbers), ``report.json`` and
``examples.png`` (a Fig. 5/6-style grid).

Computing (:mod:`.compute`) and rendering (:mod:`.report`) are apart; :mod:`.run` ties them together and
:mod:`.paper` holds the paper's numbers.
"""

from __future__ import annotations

from ipmn_lightning.workflows.evaluation.paper import PAPER
from ipmn_lightning.workflows.evaluation.run import evaluate, run_evaluation

__all__ = ["PAPER", "evaluate", "run_evaluation"]
