"""DistributedDataParallel on the CPU: 2 processes (gloo on 127.0.0.1) end with identical weights."""
from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, dataset: str, out: str, result_dir: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    from datakit.train.run import train_dataset

    res = train_dataset(dataset, "lenet5", out=out, epochs=2, batch_size=50, seed=0, device="cpu")
    torch.save({k: v.cpu() for k, v in res.model.state_dict().items()}, os.path.join(result_dir, f"rank{rank}.pt"))
    with open(os.path.join(result_dir, f"rank{rank}.json"), "w") as fh:
        json.dump({"world_size": res.world_size, "images": [h["images"] for h in res.history]}, fh)


@pytest.mark.slow
def test_two_cpu_processes_end_with_identical_weights(digits_dir, tmp_path):
    out = tmp_path / "run"
    mp.spawn(_worker, args=(2, _free_port(), str(digits_dir), str(out), str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for r in (0, 1):
        info = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert info["world_size"] == 2 and info["images"] == [200, 200]  # 400 train images sharded in two
    # rank 0 wrote the run; its checkpoint holds the same weights
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(ckpt["state_dict"][k], a[k]) for k in a)
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["train"]["world_size"] == 2 and doc["status"] == "completed"
    # and the weights moved away from the initialisation
    torch.manual_seed(0)
    from datakit.train import get_model

    init = get_model("lenet5", 10, 1).state_dict()
    assert not torch.equal(init["C1.weight"], a["C1.weight"])


def _nan_worker(rank: int, world: int, port: int, dataset: str, out: str, result_dir: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    from datakit.train import TrainingDiverged
    from datakit.train.run import train_dataset

    try:
        train_dataset(dataset, "lenet5", out=out, epochs=1, batch_size=50, lr=1e30, device="cpu")
        info = {"diverged": False}
    except TrainingDiverged as exc:
        info = {"diverged": True, "epoch": exc.epoch, "batch": exc.batch}
    with open(os.path.join(result_dir, f"nan{rank}.json"), "w") as fh:
        json.dump(info, fh)


@pytest.mark.slow
def test_ddp_ranks_stop_together_on_nan(digits_dir, tmp_path):
    mp.spawn(_nan_worker, args=(2, _free_port(), str(digits_dir), str(tmp_path / "run"), str(tmp_path)), nprocs=2,
             join=True)
    a, b = (json.loads((tmp_path / f"nan{r}.json").read_text()) for r in (0, 1))
    assert a["diverged"] and b["diverged"]
    assert (a["epoch"], a["batch"]) == (b["epoch"], b["batch"])
    doc = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert doc["status"] == "diverged" and not (tmp_path / "run" / "checkpoint.pt").exists()
