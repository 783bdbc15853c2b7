"""bench/bench_eval.py at tiny sizes: the MAC count against an independent count, the paths agree."""
import math
import os

import numpy as np
import paddle
import pytest

from bench import bench_eval
from model.deeplab_multi import SELF_TEST_BLOCKS, DeeplabMulti, ResNetMulti


def conv_size(n, kernel, stride=1, padding=0, dilation=1):
    return (n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def ceil_pool_size(n):
    """MaxPool2D(3, stride=2, padding=1, ceil_mode=True); the last window must start inside."""
    out = math.ceil((n + 2 - 3) / 2) + 1
    return out - 1 if (out - 1) * 2 >= n + 1 else out


def formula_macs(height, width, num_classes=19):
    """DeepLab-v2 ResNet-101 MACs from its architecture alone (2 ASPP branches per head)."""
    h, w = conv_size(height, 7, 2, 3), conv_size(width, 7, 2, 3)
    total = h * w * 64 * 3 * 49
    h, w = ceil_pool_size(h), ceil_pool_size(w)
    in_c = 64
    heads = {}
    for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 23, 1), (512, 3, 1)):
        for block in range(blocks):
            s = stride if block == 0 else 1
            if block == 0:
                h, w = conv_size(h, 1, s), conv_size(w, 1, s)
                total += h * w * planes * 4 * in_c  # projection shortcut
            total += h * w * (planes * in_c + planes * planes * 9 + planes * 4 * planes)
            in_c = planes * 4
        heads[in_c] = h * w * num_classes * in_c * 9 * 2
    return total + heads[1024] + heads[2048], heads


@pytest.fixture(scope="module")
def model():
    paddle.seed(1)
    net = DeeplabMulti(num_classes=19)
    net.eval()
    return net


@pytest.mark.parametrize("size", [(64, 64), (72, 100)])
def test_counted_macs_equal_formula(model, size):
    macs, per_layer, unused = bench_eval.count_macs(model, *size)
    expected, heads = formula_macs(*size)
    assert macs == expected
    assert per_layer["layer5"] == heads[1024] and per_layer["layer6"] == heads[2048]
    assert unused == heads[1024] + heads[2048]  # branches 3-4 cost what branches 1-2 do


def test_stem_macs_scale_with_pixels(model):
    small = bench_eval.count_macs(model, 64, 64)[1]
    large = bench_eval.count_macs(model, 128, 128)[1]
    assert large["conv1"] == 4 * small["conv1"]
    # Not the rest: past the ceil-mode max pool (17x17 vs 33x33) and the stride-2 layer2 the
    # maps are 9x9 vs 17x17, 3.57x the pixels, so the network is not 4x for a 4x image.
    assert large["layer4"] * 9 * 9 == small["layer4"] * 17 * 17
    assert large["layer4"] < 4 * small["layer4"]


def test_main_runs_and_paths_agree(model, monkeypatch):
    # Non-trivial BN statistics, so that folding them changes the weights.
    rng = np.random.default_rng(0)
    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.BatchNorm2D):
            n = layer._mean.shape[0]
            layer._mean.set_value(rng.normal(0, 0.1, n).astype("float32"))
            layer._variance.set_value(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.weight.set_value(rng.uniform(0.8, 1.2, n).astype("float32"))
            layer.bias.set_value(rng.normal(0, 0.1, n).astype("float32"))
    monkeypatch.setattr(bench_eval, "DeeplabMulti", lambda num_classes: model)
    small_gemm = bench_eval.gemm_peak
    monkeypatch.setattr(bench_eval, "gemm_peak", lambda: small_gemm(256, 1))
    result = bench_eval.main(["--height", "64", "--width", "64", "--runs", "1", "--warmup", "0", "--pairs", "5"])
    assert result["macs"] == formula_macs(64, 64)[0]
    assert [row[0][:3] for row in result["rows"]] == ["(a)", "(b)", "(c)"]
    for name, seconds, rel_diff, others in result["rows"]:
        assert seconds > 0 and rel_diff < 1e-4 and 0 <= others <= 8, name
    assert result["upsample"] > 0 and result["iou"] > 0 and result["rss"] > 100


def test_bench_predict_runs_at_tiny_sizes(monkeypatch):
    from bench import bench_predict
    tiny = ResNetMulti(list(SELF_TEST_BLOCKS), 19)  # what is measured here is the pipeline, not the network
    monkeypatch.setattr(bench_predict, "DeeplabMulti", lambda num_classes: tiny)
    small_gemm = bench_eval.gemm_peak
    monkeypatch.setattr(bench_predict, "gemm_peak", lambda: small_gemm(256, 1))
    result = bench_predict.main(["--images", "1", "--width", "96", "--height", "48", "--input-size", "64,32"])
    assert [(row["backend"], row["workers"]) for row in result["rows"]][:3] == [
        ("dygraph", 2), ("inference", 2), ("inference", 0)]
    for row in result["rows"]:
        assert row["images_per_s"] > 0 and 0 <= row["outside"] < 1 and row["network_s"] > 0, row
    assert set(result["stages"]) == {"decode", "resize + mean", "network", "upsample + argmax", "encode + write"}
    assert [row["backend"] for row in result["rows"][3:]] == ["export"] + ([] if result["onnx_skipped"] else
                                                                            ["export+onnx"])
    backends = ["inference"] + ([] if result["onnx_skipped"] else ["onnx"])
    assert sorted(result["agreement"]) == backends and 0 < result["commonest_share"] <= 1
    for backend, shares in result["agreement"].items():
        assert list(shares) == ["default", "fixed-size argmax", "fixed-size softmax", "fixed-size none",
                                "any-size"], backend
        assert shares["default"] >= 0.999, (backend, shares)  # evaluation's way, inside the graph
        # not 1: a fixed-size argmax export's train ids come back to the image's size by nearest resizing;
        # an any-size export runs the network at the image's own size, which evaluation does not
        assert all(0.9 < shares[kind] <= 1 for kind in shares if kind != "any-size"), (backend, shares)
        assert 0 < shares["any-size"] <= 1


def test_compare_revisions_reports_each_difference_and_no_unseeded_state(tmp_path):
    from PIL import Image
    from bench.compare_revisions import differences

    def snapshot(folder, weight, pixel, extra):
        os.makedirs(str(folder / "pred"))
        paddle.save({"conv.weight": np.full((2, 2), weight, np.float32)}, str(folder / "GTA5_2.pdparams"))
        paddle.save({"iteration": 2, "extra": extra,
                     "random_states": {"numpy": ("MT19937", np.arange(3) + weight), "python": (3, (weight,), None)}},
                    str(folder / "GTA5_2_state.pdopt"))
        Image.fromarray(np.full((2, 3), pixel, np.uint8)).save(str(folder / "pred" / "a.png"))

    def where_and_when(folder):  # differ between any two runs: not compared
        return {"environment": {"command": "train.py --snapshot-dir " + folder, "recorded": folder},
                "settings": {"snapshot_dir": folder, "lr": 0.1}}

    snapshot(tmp_path / "base", 1.0, 7, dict(where_and_when("base"), args={"lr": 0.1}))
    snapshot(tmp_path / "same", 2.0, 7, dict(where_and_when("same"), args={"lr": 0.1, "classes": ["road", "car"]}))
    found, compared, added = differences(str(tmp_path / "base"), str(tmp_path / "same"))
    assert (compared, added) == (3, ["extra.args.classes"])
    assert found == ["GTA5_2.pdparams conv.weight: differs"]
    snapshot(tmp_path / "other", 1.0, 8, dict(where_and_when("other"), args={}))
    found, _, _ = differences(str(tmp_path / "base"), str(tmp_path / "other"))
    assert found == ["GTA5_2_state.pdopt extra.args.lr: not in the head", os.path.join("pred", "a.png")]
