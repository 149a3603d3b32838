"""Architecture accounting: the lecture's Table 1, LeCun's C3 table, the 1989 net, the CLI."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from datakit.cli import cli
from datakit.train import get_model, summarize
from datakit.train.accounting import format_count
from datakit.train.models import LECUN_C3_TABLE, MaskedConv2d

TABLE_1 = {  # layer: (units, connections, weights), LeNet lecture Table 1
    "C1": (4704, 117_600, 150), "S2": (1176, 4704, 0), "C3": (1600, 240_000, 2400), "S4": (400, 1600, 0),
    "F5": (120, 48_000, 48_000), "F6": (84, 10_080, 10_080), "output": (10, 840, 840),
}


def _rows(frame):
    return {r.layer: (r.units, r.connections, r.weights) for r in frame.itertuples()}


def test_lenet5_reproduces_table_1():
    frame = summarize(get_model("lenet5", 10, 1), (1, 32, 32))
    rows = _rows(frame)
    assert {k: rows[k] for k in TABLE_1} == TABLE_1
    assert list(frame["layer"]) == list(TABLE_1) + ["total"]
    assert rows["total"] == (8094, 422_824, 61_470)


def test_lenet5_lecun_c3_counts_only_existing_connections():
    model = get_model("lenet5", 10, 1, c3="lecun")
    assert sum(len(t) for t in LECUN_C3_TABLE) == 60
    c3 = _rows(summarize(model, (1, 32, 32)))["C3"]
    assert c3 == (1600, 150_000, 1500)
    c3_b = _rows(summarize(model, (1, 32, 32), with_biases=True))["C3"]
    assert c3_b == (1600, 151_600, 1516)


def test_masked_weights_stay_zero_and_untrained():
    torch.manual_seed(0)
    model = get_model("lenet5", 10, 1, c3="lecun")
    conv = model.C3
    assert isinstance(conv, MaskedConv2d)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(torch.randn(4, 1, 32, 32)).sum()
    loss.backward()
    masked = conv.mask.expand_as(conv.weight) == 0
    assert int(masked.sum()) == (96 - 60) * 25
    assert torch.all(conv.weight.grad[masked] == 0)
    opt.step()
    effective = conv.weight * conv.mask
    assert torch.all(effective[masked] == 0)
    assert conv.connected_weights() == 1500


def test_lenet1989_matches_the_paper_with_biases():
    model = get_model("lenet1989", 10, 1)
    plain = _rows(summarize(model, (1, 16, 16)))
    assert plain["H1"] == (768, 19_200, 300)
    assert plain["H2"] == (192, 38_400, 2400)
    with_b = _rows(summarize(model, (1, 16, 16), with_biases=True))
    # LeCun et al. 1989: 1,256 units (256 of them inputs), 64,660 connections, 9,760 free parameters
    assert with_b["total"] == (1000, 64_660, 9760)
    assert with_b["total"][0] + 16 * 16 == 1256


def test_alexnet_is_about_sixty_million_weights():
    model = get_model("alexnet", 1000, 3)
    frame = summarize(model, (3, 224, 224), with_biases=True)
    total = _rows(frame)["total"]
    assert total[2] == sum(p.numel() for p in model.parameters())
    assert 60e6 < total[2] < 62e6


def test_adaptive_pool_window_is_exact():
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d((2, 2)))
    frame = summarize(model, (1, 5, 5))
    # windows along each dim of length 5 -> 2: [0,3) and [2,5): 3 + 3 = 6 -> 6 * 6 = 36
    assert _rows(frame)["0"] == (4, 36, 0)


def test_format_count_follows_the_lecture():
    assert [format_count(n) for n in (4704, 117600, 10080, 840)] == ["4704", "117,600", "10,080", "840"]


def test_cli_summary_prints_table_1():
    result = CliRunner().invoke(cli, ["summary", "lenet5"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines()[2:]}
    assert lines["C1"][1:5] == ["convolution", "4704", "117,600", "150"]
    assert lines["C3"][1:5] == ["convolution", "1600", "240,000", "2400"]
    assert lines["F5"][1:6] == ["fully", "connected", "120", "48,000", "48,000"]
    assert lines["output"][3:6] == ["10", "840", "840"]


def test_cli_summary_json_and_lecun_with_biases():
    result = CliRunner().invoke(cli, ["summary", "lenet5", "-c", "c3=lecun", "--with-biases", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = {r["layer"]: r for r in json.loads(result.output)}
    assert (rows["C3"]["connections"], rows["C3"]["weights"]) == (151_600, 1516)


def test_cli_summary_csv_custom_input():
    result = CliRunner().invoke(cli, ["summary", "resnet18", "--input", "1x28x28", "--num-classes", "10",
                                      "--format", "csv"])
    assert result.exit_code == 0, result.output
    header, first = result.output.splitlines()[:2]
    assert header == "layer,type,output,units,connections,weights"
    assert first.startswith("conv1,convolution,64x28x28,")  # small-input stem: 3x3 stride 1


@pytest.mark.parametrize("args, message", [
    (["summary", "lenet6"], "Unknown model 'lenet6'. Did you mean 'lenet5'?"),
    (["summary", "lenet5", "--input", "32x32"], "--input must look like CxHxW"),
    (["summary", "lenet5", "-c", "c3"], "--config expects KEY=VALUE"),
    (["summary", "lenet5", "-c", "c3=half"], "Valid values are {full, lecun}"),
    (["summary", "lenet5", "--input", "1x16x16"], "cannot take input 1x16x16"),
])
def test_cli_summary_errors(args, message):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    assert message in result.output
