"""EpochBatches: within-bucket batches, every sample once per epoch, resumable position."""

from __future__ import annotations

from pathlib import Path

import torch
from flowlora.trainer_core.batching import EpochBatches
from flowlora.trainer_core.data.buckets import Bucket
from flowlora.trainer_core.data.dataset import Dataset, Sample


def dataset():
    samples = []
    for i in range(7):
        bucket = Bucket(64, 32) if i % 3 else Bucket(32, 64)
        latent = torch.full((4, bucket.height // 8, bucket.width // 8), float(i))
        samples.append(Sample(source=Path(f"img{i}.png"), bucket=bucket, latent=latent, prompt=f"p{i}", conditioning=i))
    return Dataset(tuple(samples), tuple(f"cond{i}" for i in range(7)), "empty")


def test_batches_stay_in_one_bucket_and_cover_each_epoch():
    source = EpochBatches(dataset(), 2)
    gen = torch.Generator().manual_seed(0)
    seen = []
    for _ in range(source.steps_per_epoch()):
        batch = source.next_batch(2, gen)
        assert len({tuple(x.shape) for x in batch.latents}) == 1  # stacked, so one shape
        ids = [int(x[0, 0, 0]) for x in batch.latents]
        assert [f"img{i}.png" for i in ids] == batch.sources and batch.conds == [f"cond{i}" for i in ids]
        seen += ids
    assert sorted(seen) == list(range(7)) and source.epoch == 1


def test_resumed_position_gives_the_same_batches():
    a, b = EpochBatches(dataset(), 2), EpochBatches(dataset(), 2)
    ga, gb = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(3):
        a.next_batch(2, ga)
        b.next_batch(2, gb)
    state, gen_state = b.state_dict(), gb.get_state()
    c, gc = EpochBatches(dataset(), 2), torch.Generator()
    c.load_state_dict(state)
    gc.set_state(gen_state)
    for _ in range(6):  # crosses into the next epoch
        assert a.next_batch(2, ga).sources == c.next_batch(2, gc).sources


def test_latent_transform_is_applied():
    source = EpochBatches(dataset(), 1, latent_transform=lambda x: x * 2 + 1)
    batch = source.next_batch(1, torch.Generator().manual_seed(0))
    i = int(batch.sources[0][3:-4])
    assert torch.equal(batch.latents, torch.full_like(batch.latents, 2.0 * i + 1))
