"""The benchmark command runs (tiny sizes): a smoke test, not a timing."""

import json

import pytest

from benchmarks.__main__ import main
from benchmarks.likelihood import decoder_flops
from benchmarks.timing import interleaved, table
from pyro_vae.nets import MLPDecoder


def test_decoder_flops_counts_every_linear_layer():
    assert decoder_flops(MLPDecoder(2, [512, 256])) == 2 * (2 * 256 + 256 * 512 + 512 * 784)


def test_interleaved_runs_every_side_each_repeat():
    calls = []
    result = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3)
    assert calls == ["a", "b"] * 3 and set(result) == {"a", "b"} and len(result["a"]["runs"]) == 3
    assert table([["x", "1"]], ["name", "value"]).splitlines()[0] == "| name | value |"


@pytest.mark.mnist
def test_quick_benchmark_run(tmp_path, data_dir, capsys):
    out = tmp_path / "bench.json"
    assert main(["--quick", "--data-dir", str(data_dir), "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert {"mlp_epoch", "conv_epoch", "mean_field_step_seconds", "log_likelihood"} <= set(results)
    assert set(results["mlp_epoch"]) == {"pyro_vae", "handwritten", "dataloader"}
    assert "pyro_vae / handwritten" in capsys.readouterr().out
