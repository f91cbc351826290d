"""hwnas.torch_threads: a library call must hand torch's thread count back as it found it."""
import pytest
import torch

from hwnas.torch_threads import torch_threads


def test_sets_inside_and_restores_after_even_on_error():
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with pytest.raises(RuntimeError, match="boom"):
        with torch_threads(target):
            assert torch.get_num_threads() == target
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("n", [None, 0])
def test_none_or_zero_leaves_the_setting_alone(n):
    before = torch.get_num_threads()
    with torch_threads(n):
        assert torch.get_num_threads() == before
    assert torch.get_num_threads() == before
