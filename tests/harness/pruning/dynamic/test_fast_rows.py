"""antidote_fast's structured spatial pruning (option ``rows``): one contiguous band of output
rows per input, executed as slices, equal to its masked reference, with its MACs counted."""

from __future__ import annotations

import pytest
import torch

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.measure.flops import effective_macs
from prunebench.harness.models import create_model
from prunebench.harness.pruning import PruneContext, PruningConfig, get_method
from prunebench.harness.pruning.dynamic.fast_blocks import FastBasicBlock


@pytest.fixture(scope="module")
def images(digits) -> torch.Tensor:
    return torch.stack([digits.test[i][0] for i in range(12)])


def _net(digits, images, mode: str, keep: float = 0.6, **options: object) -> torch.nn.Module:
    torch.manual_seed(0)
    base = create_model("resnet20", digits.num_classes, 1).eval()
    cfg = PruningConfig("antidote_fast", global_keep=keep, exec_mode=mode, options=options)
    return get_method("antidote_fast").apply(
        base, cfg, PruneContext(images[:1], splits=digits, progress=False)).eval()


@pytest.mark.parametrize("decide", ["block", "stage"])
def test_row_bands_equal_the_masked_reference_in_every_mode(digits, images, decide) -> None:
    outs = {}
    for mode in ("fast", "masked", "gathered"):
        net = _net(digits, images, mode, rows=0.5, decide=decide)
        with torch.inference_mode():
            outs[mode] = net(images)
            one_by_one = torch.cat([net(x[None]) for x in images])
        torch.testing.assert_close(outs[mode], one_by_one, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs["fast"], outs["masked"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs["fast"], outs["gathered"], atol=1e-5, rtol=1e-5)


def test_rows_cut_macs_and_change_the_output_only_outside_the_band(digits, images) -> None:
    full = _net(digits, images, "fast", keep=1.0)
    half = _net(digits, images, "fast", keep=1.0, rows=0.5)
    dense = full.prunebench_dynamic["dense_macs"]
    red_full = 1 - effective_macs(full, [images]).mean / dense
    red_half = 1 - effective_macs(half, [images]).mean / dense
    assert red_half > red_full + 0.25  # about half the block rows (conv1 reads 2 rows more)
    block = next(m for m in half.modules() if isinstance(m, FastBasicBlock))
    x = torch.randn(1, 16, 32, 32, generator=torch.Generator().manual_seed(0)).relu()
    with torch.inference_mode():
        r0 = int(block._bands(x)[0])
        _, r = block._band_rows(x)
        banded, whole = block(x), next(
            m for m in full.modules() if isinstance(m, FastBasicBlock))(x)
    torch.testing.assert_close(banded[:, :, r0:r0 + r], whole[:, :, r0:r0 + r])
    assert not torch.allclose(banded, whole)


def test_the_band_sits_where_the_input_has_its_energy() -> None:
    block = FastBasicBlock(create_model("resnet20", 10, 1).layer1[0].eval(), torch.arange(16),
                           None, 0.0, [16], "fast")
    block.set_rows(0.25)
    x = torch.zeros(1, 16, 32, 32)
    x[:, :, 20:28] = 1.0
    assert int(block._bands(x)[0]) == 20


def test_rows_are_not_exported_and_bad_values_are_refused(digits, images) -> None:
    from prunebench.harness.pruning.dynamic.export import exportable_reason

    assert "rows" in exportable_reason(_net(digits, images, "fast", rows=0.5))
    with pytest.raises(PrunebenchError, match="rows"):
        _net(digits, images, "fast", rows=0.0)
