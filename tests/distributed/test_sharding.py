"""The rank-level pieces of DDP without processes: shards, global batches, mid-epoch resume state."""

from __future__ import annotations

import pytest

from imagenette_lab.engine import distributed as dist


@pytest.mark.parametrize("n,world", [(15, 2), (7, 3), (2, 4), (0, 2)])
def test_shards_cover_every_item_exactly_once(n: int, world: int) -> None:
    items = [i for r in range(world) for i in dist.ShardSampler(n, r, world)]
    assert sorted(items) == list(range(n))
    assert sum(len(dist.ShardSampler(n, r, world)) for r in range(world)) == n


def test_rank_batches_add_up_to_the_one_process_batch() -> None:
    one = dist.EpochSampler(24, shuffle=True, seed=3)
    one.set_epoch(2)
    ranks = [dist.EpochSampler(24, shuffle=True, seed=3, rank_=r, world=2) for r in (0, 1)]
    for s in ranks:
        s.set_epoch(2)
    order, parts = one.order(), [s.order() for s in ranks]
    for k in range(3):  # global batch 8 = 2 ranks x 4
        assert sorted(order[8 * k: 8 * k + 8]) == sorted(parts[0][4 * k: 4 * k + 4] + parts[1][4 * k: 4 * k + 4])


def _state(step: int, loss: float, correct: int, n: int, seen: list[int]) -> dict:
    return {"step": step, "loss_sum": loss, "correct": correct, "n": n, "seconds": 1.0, "seen": seen}


def test_mid_epoch_state_per_rank_or_merged(monkeypatch) -> None:
    ck = {"epoch": 0, "partial": _state(2, 1.0, 3, 8, [0, 2]), "rng": "r0",
          "rank_boundaries": [{"state": _state(2, 1.0, 3, 8, [0, 2]), "rng": "r0"},
                              {"state": _state(2, 2.0, 5, 8, [1, 3]), "rng": "r1"}]}
    monkeypatch.setattr(dist, "world_size", lambda: 2)
    monkeypatch.setattr(dist, "rank", lambda: 1)
    assert dist.rank_boundary(ck) == ck["rank_boundaries"][1]  # same world: its own sums and RNG
    monkeypatch.setattr(dist, "world_size", lambda: 1)
    monkeypatch.setattr(dist, "rank", lambda: 0)
    merged = dist.rank_boundary(ck)  # one process: the sums of both, nothing counted twice
    assert merged["state"]["loss_sum"] == 3.0 and merged["state"]["n"] == 16 and merged["state"]["seen"] == [0, 1, 2, 3]
    monkeypatch.setattr(dist, "world_size", lambda: 3)
    monkeypatch.setattr(dist, "rank", lambda: 2)
    other = dist.rank_boundary(ck)
    assert other["state"]["n"] == 0 and other["state"]["step"] == 2 and other["rng"] is None
