"""Process-wide settings a run makes before it trains."""
import ctypes
import os

import pytest
import torch

from shared.experiment import skip_futile_nvml_check


def _cdll_that(loads: bool):
    def cdll(name, *args, **kwargs):
        if not loads:
            raise OSError(f"{name}: cannot open shared object file")
        return object()
    return cdll


@pytest.mark.parametrize("nvml_loads", [False, True])
def test_the_nvml_check_goes_only_where_nvml_cannot_load(monkeypatch, nvml_loads):
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # what importing Lightning sets
    answer = torch.cuda.is_available()
    with monkeypatch.context() as patched:
        patched.setattr(ctypes, "CDLL", _cdll_that(nvml_loads))
        skip_futile_nvml_check()
    assert ("PYTORCH_NVML_BASED_CUDA_CHECK" in os.environ) == nvml_loads
    assert torch.cuda.is_available() == answer  # the variable changes the cost of the answer, not the answer


def test_a_variable_the_user_set_otherwise_is_left_alone(monkeypatch):
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "0")
    monkeypatch.setattr(ctypes, "CDLL", _cdll_that(False))
    skip_futile_nvml_check()
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "0"
