from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

pytest.importorskip("cv2")

from ipmn_lightning.data.synthetic import render_face, sample_identity, sample_scene
from ipmn_lightning.faces.analysis import to_uint8_array
from ipmn_lightning.faces.generators import LandmarkMaskGenerator, face_region, make_mask_generator
from ipmn_lightning.faces.generators.geometry import _apply, umeyama
from tests.fakes.faces import FakeAnalyzer


def _faces(n: int, size: int = 64) -> torch.Tensor:
    out = []
    for i in range(n):
        rng = np.random.default_rng(100 + i)
        out.append(render_face(sample_identity(rng), sample_scene(rng), size))
    return torch.stack(out)


def test_umeyama_recovers_a_similarity() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 50, (20, 2))
    a = 1.7 * np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
    m = np.concatenate([a, [[4.0], [-2.0]]], axis=1)
    assert np.allclose(umeyama(src, _apply(m, src)), m, atol=1e-8)


def test_swap_changes_only_the_face_and_is_deterministic() -> None:
    gen = LandmarkMaskGenerator(analyzer=FakeAnalyzer())
    x = _faces(3)
    p, r = x, x.roll(1, 0)
    first = gen(p, r)
    assert first.shape == p.shape and first.dtype == torch.float32
    assert 0 <= float(first.min()) and float(first.max()) <= 1
    assert torch.equal(first, gen(p, r))  # deterministic
    for i in range(3):
        pa, ra = to_uint8_array(p[i]), to_uint8_array(r[i])
        lp, lr = gen.landmarks(pa), gen.landmarks(ra)
        target, _ = gen.target_landmarks(lp, lr)
        region = face_region([lp, target], 64, 64)
        m = to_uint8_array(first[i])
        assert np.array_equal(m[~region], pa[~region])  # the scene is x_p's, bit for bit
        assert np.abs(m[region].astype(int) - pa[region]).mean() > 2  # the face is not


@pytest.mark.parametrize("blend", ["poisson", "feather"])
@pytest.mark.parametrize("color", ["lab", "local"])
def test_options_run(blend: str, color: str) -> None:
    gen = LandmarkMaskGenerator(blend=blend, color=color, analyzer=FakeAnalyzer())  # type: ignore[arg-type]
    x = _faces(2, 48)
    m = gen(x, x.flip(0))
    assert m.shape == (2, 3, 48, 48)


def test_no_face_is_a_failure_never_a_copy() -> None:
    gen = LandmarkMaskGenerator(analyzer=FakeAnalyzer())
    x = _faces(2, 48)
    black = torch.zeros_like(x[:1])
    out = gen.generate(torch.cat([x[:1], black]), torch.cat([black, x[1:]]))
    assert [o.mask for o in out] == [None, None]
    assert out[0].reason == "no face found in the replacement image"
    assert out[1].reason == "no face found in the protected image"
    with pytest.raises(ValueError, match="no face found"):
        gen(black, x[:1])


def test_grey_protected_gives_a_grey_mask() -> None:
    gen = LandmarkMaskGenerator(analyzer=FakeAnalyzer())
    x = _faces(2, 48)
    grey = x[:1].mean(1, keepdim=True).expand(-1, 3, -1, -1).contiguous()
    m = to_uint8_array(gen(grey, x[1:])[0]).astype(int)
    assert np.abs(m - m.mean(2, keepdims=True)).max() <= 1


def test_make_mask_generator() -> None:
    assert isinstance(make_mask_generator("landmark"), LandmarkMaskGenerator)
    with pytest.raises(ValueError, match="unknown mask generator"):
        make_mask_generator("diffface-nope")


def test_the_registry_is_one_list_of_paths_resolved_on_use() -> None:
    """Every entry names a :class:`MaskGenerator` whose ``name`` is its key; the bottom layer never imports a wing."""
    import subprocess
    import sys

    from ipmn_lightning.faces.generators import GENERATORS, MaskGenerator, generator_class

    assert list(GENERATORS) == ["landmark", "mosaic", "diffface"]
    for name, path in GENERATORS.items():
        assert ":" in path
        if name == "diffface" and importlib.util.find_spec("diffusers") is None:
            continue
        cls = generator_class(name)
        assert issubclass(cls, MaskGenerator) and cls.name == name
    assert generator_class("landmark").driver is None and generator_class("mosaic").driver is None
    code = "import sys, ipmn_lightning.faces.generators; print('ipmn_lightning.diffface' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr
