import gzip
import shutil

import numpy as np
import pytest
import torch

from shared.data import BUNDLED_DIR, MNISTDataModule, DataFileError, load_mnist, to_model_range

RAW = BUNDLED_DIR / "MNIST" / "raw"


def test_split_sizes_and_binary_values(full_mnist):
    sizes = {name: len(split) for name, split in full_mnist.splits.items()}
    assert sizes == {"train": 45_000, "val": 5_000, "test": 10_000}
    for split in full_mnist.splits.values():
        assert split.images.shape[1:] == (1, 28, 28)
        assert set(split.images.unique().tolist()) == {0.0, 1.0}
    # Thresholding at 0.5 leaves roughly 13% of MNIST pixels on.
    assert 0.10 < full_mnist.splits["train"].images.mean() < 0.16


def test_val_is_the_5000_images_after_train():
    images, labels = load_mnist("train")
    datamodule = MNISTDataModule()
    datamodule.setup()
    assert torch.equal(datamodule.splits["val"].labels, labels[45_000:50_000])
    assert torch.equal(datamodule.splits["val"].images, to_model_range(images[45_000:50_000]))


def test_value_ranges():
    images = torch.tensor([[[0, 127, 128, 255]]], dtype=torch.uint8)
    assert to_model_range(images).flatten().tolist() == [0, 0, 1, 1]
    grey = to_model_range(images, binarize=False).flatten()
    assert grey.min() == 0 and grey.max() == 1
    assert to_model_range(images, binarize=False, value_range="pm1").flatten()[[0, 3]].tolist() == [-1, 1]
    with pytest.raises(ValueError, match="value_range"):
        to_model_range(images, value_range="0255")


def test_batches_are_tensor_slices_and_shuffle_is_seeded(tiny_datamodule):
    batches = list(tiny_datamodule.train_dataloader())
    assert [len(b[0]) for b in batches] == [32, 32, 32, 32]
    assert batches[0][0].shape == (32, 1, 28, 28) and batches[0][1].dtype == torch.int64
    again = MNISTDataModule(batch_size=32, subset=128)
    again.setup()
    assert torch.equal(next(iter(again.train_dataloader()))[1], batches[0][1])
    assert not torch.equal(batches[0][1], tiny_datamodule.splits["train"].labels[:32])  # shuffled
    other_seed = MNISTDataModule(batch_size=32, subset=128, seed=7)
    other_seed.setup()
    assert not torch.equal(next(iter(other_seed.train_dataloader()))[1], batches[0][1])
    val_labels = torch.cat([b[1] for b in tiny_datamodule.val_dataloader()])
    assert torch.equal(val_labels, tiny_datamodule.splits["val"].labels)  # evaluation keeps order


def test_train_on_all_uses_60000_images():
    datamodule = MNISTDataModule(train_on_all=True, binarize=False, value_range="pm1")
    datamodule.setup()
    train = datamodule.splits["train"].images
    assert len(train) == 60_000 and train.min() == -1 and train.max() == 1


@pytest.fixture
def copied_raw(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in RAW.glob("*.gz"):
        shutil.copy(path, raw / path.name)
    return raw


def test_missing_file_is_named(copied_raw):
    (copied_raw / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataFileError, match="t10k-labels-idx1-ubyte.*missing.*--data_dir"):
        load_mnist("test", copied_raw.parent.parent)


def test_truncated_file_is_named(copied_raw):
    path = copied_raw / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(DataFileError, match="train-images-idx3-ubyte.gz is corrupt or truncated"):
        load_mnist("train", copied_raw.parent.parent)


def test_wrong_length_is_named(copied_raw):
    path = copied_raw / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-784]))
    with pytest.raises(DataFileError, match="t10k-images-idx3-ubyte.gz has .* bytes"):
        load_mnist("test", copied_raw.parent.parent)


def test_uncompressed_files_are_read(copied_raw):
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        gz = copied_raw / f"{name}.gz"
        (copied_raw / name).write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    images, labels = load_mnist("test", copied_raw.parent.parent)
    assert images.shape == (10_000, 28, 28) and labels.shape == (10_000,)
    assert torch.equal(labels, load_mnist("test")[1])


def test_dynamic_binarization_redraws_training_images_and_fixes_val_and_test():
    def module(seed=42):
        datamodule = MNISTDataModule(subset=256, binarization="dynamic", seed=seed)
        datamodule.setup()
        return datamodule

    first, again, other = module(), module(), module(seed=7)
    train = first.splits["train"]
    draw_a, draw_b = train[list(range(64))][0], train[list(range(64))][0]
    assert set(draw_a.unique().tolist()) == {0.0, 1.0} and not torch.equal(draw_a, draw_b)  # a new draw each time
    assert torch.equal(draw_a, again.splits["train"][list(range(64))][0])  # seeded
    grey = to_model_range(load_mnist("train")[0][:64], binarize=False)
    assert (draw_a <= torch.ceil(grey)).all()  # a black pixel is never drawn white
    for split in ("val", "test"):
        assert torch.equal(first.splits[split].images, other.splits[split].images)  # fixed, whatever the seed
        assert set(first.splits[split].images.unique().tolist()) == {0.0, 1.0}
    assert first.description()["pixels"] == "dynamically binarized"
    with pytest.raises(ValueError, match="binarization must be"):
        MNISTDataModule(binarization="stochastic")


@pytest.mark.parametrize("binarization", ["threshold", "dynamic"])
def test_resident_batches_are_the_dataloaders_batches_in_the_same_order(binarization):
    """Without workers the splits stay on the device and batches are sliced there: the same batches, in the
    same order, epoch after epoch, as the DataLoader (the path with workers) draws for the seed."""
    from shared.batches import ResidentBatches, batch_loader

    def epochs(loader, count=3):
        return [torch.cat([images.flatten(1) for images, _ in loader]) for _ in range(count)]

    loaded, resident = (MNISTDataModule(batch_size=48, subset=200, binarization=binarization) for _ in range(2))
    loaded.setup()
    resident.setup()
    batches = resident.train_dataloader()
    assert isinstance(batches, ResidentBatches) and len(batches) == 5
    expected = epochs(batch_loader(loaded.splits["train"], 48, torch.Generator().manual_seed(42), seed=42))
    assert all(torch.equal(a, b) for a, b in zip(expected, epochs(batches), strict=True))
    assert not torch.equal(expected[0], expected[1])  # a new order (and for "dynamic", new draws) each epoch
    assert torch.equal(torch.cat([i for i, _ in resident.val_dataloader()]), loaded.splits["val"].images)


@pytest.mark.parametrize("workers", [0, 1])
def test_grouped_training_batches_are_the_batches_in_order_and_evaluation_is_not_grouped(workers):
    from shared.batches import BatchGroup

    one, grouped = (MNISTDataModule(batch_size=16, subset=200, binarization="dynamic", num_workers=workers,
                                    batches_per_call=k) for k in (1, 5))
    one.setup()
    grouped.setup()
    for _ in range(2):  # two epochs: each its own order and draws
        batches, groups = list(one.train_dataloader()), list(grouped.train_dataloader())
        assert [len(group) for group in groups] == [5, 5, 3] and all(isinstance(g, BatchGroup) for g in groups)
        flattened = [batch for group in groups for batch in group]
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, flattened, strict=True))
    assert not isinstance(next(iter(grouped.val_dataloader())), BatchGroup)
    assert not isinstance(next(iter(grouped.training_batches())), BatchGroup)
    with pytest.raises(ValueError, match="batches_per_call must be positive, got 0"):
        MNISTDataModule(batches_per_call=0)


def test_resident_batches_split_between_processes_like_a_distributed_sampler():
    from shared.batches import ResidentBatches, TensorBatchDataset

    dataset = TensorBatchDataset(torch.arange(50.0).view(50, 1), torch.zeros(50))
    ranks = [[images.flatten().tolist() for images, _ in ResidentBatches(dataset, 10, None, rank, 3)] for rank in range(3)]
    assert [len(batches) for batches in ranks] == [2, 2, 2]  # 5 batches padded to 6 with the first
    assert sorted(sum(ranks, [])) == sorted([list(range(i, i + 10)) for i in range(0, 50, 10)] + [list(range(10))])


def test_a_last_training_batch_of_one_image_is_left_out_which_batch_norm_cannot_train_on():
    from shared.batches import process_slices

    def sizes(n, batch_size, **kwargs):
        return [len(range(n)[batch]) for batch in process_slices(n, batch_size, **kwargs)]

    assert sizes(129, 64) == [64, 64] and sizes(130, 64) == [64, 64, 2] and sizes(1, 64) == [1]
    assert sizes(3, 1) == [1, 1, 1]  # every batch is one image: none left out
    assert sizes(129, 64, shard=True) == [64, 64, 1]  # evaluation counts every image


@pytest.mark.parametrize("images, processes", [(50, 3), (10_000, 8), (2, 3)])
def test_evaluated_splits_count_each_image_once_over_the_processes(images, processes):
    from shared.batches import EpochBatches, ResidentBatches, TensorBatchDataset

    dataset = TensorBatchDataset(torch.arange(float(images)).view(images, 1), torch.zeros(images))
    ranks = [[batch.flatten().tolist() for batch, _ in ResidentBatches(dataset, 128, None, rank, processes, shard=True)]
             for rank in range(processes)]
    assert all(ranks)  # each process has a batch: all of them reduce the figures at the epoch's end
    loaded = [[[float(i) for i in batch] for batch in EpochBatches(images, 128, None, rank, processes, shard=True)]
              for rank in range(processes)]
    assert loaded == ranks  # with workers, the DataLoader's sampler takes the same batches
    seen = sorted(sum(sum(ranks, []), []))
    assert seen == list(range(images)) if images >= processes else set(seen) == set(range(images))
    single = [batch.flatten().tolist() for batch, _ in ResidentBatches(dataset, 128, None, shard=True)]
    assert single == [list(map(float, range(i, min(i + 128, images)))) for i in range(0, images, 128)]



@pytest.mark.parametrize("images, processes", [(2, 3), (1, 4), (5, 8), (7, 3), (128, 3)])
def test_an_evaluating_process_takes_its_own_share_of_the_images_and_at_most_one_more_where_it_has_none(images,
                                                                                                        processes):
    """Each process's ``1/world_size`` of the split; one whose share is empty (more processes than images) takes the
    first image alone, a batch to reduce its figures with, never the whole split (2 of 2 images on rank 0 of 3)."""
    from shared.batches import process_slices

    held = [[i for batch in process_slices(images, 128, rank, processes, shard=True) for i in range(images)[batch]]
            for rank in range(processes)]
    shares = [list(range(rank * images // processes, (rank + 1) * images // processes)) for rank in range(processes)]
    assert held == [share or [0] for share in shares]
    assert sum(map(len, held)) == images + sum(not share for share in shares)

@pytest.mark.parametrize("workers", [0, 2])
def test_the_model_summarys_example_input_is_moved_to_the_device_and_never_binarized(workers):
    # Lightning sends a model's example_input_array through the data module's transfer; a batch is a pair
    datamodule = MNISTDataModule(num_workers=workers, subset=64, binarization="dynamic")
    datamodule.setup("fit")
    datamodule.trainer = type("FittingTrainer", (), {"training": True})()
    example = torch.full((2, 1, 28, 28), 0.5)
    moved = datamodule.transfer_batch_to_device(example, torch.device("meta"), 0)
    assert isinstance(moved, torch.Tensor) and moved.device.type == "meta" and moved.shape == example.shape


def test_a_dynamic_run_resumed_on_another_kind_of_device_restarts_its_binarization_from_the_seed(capsys):
    """A checkpoint's binarization state is its device's (a GPU generator's is 16 bytes): set on a CPU generator it
    was a traceback; the stream restarts from the seed and the epoch, and the run says so."""
    def first_batch(state):
        datamodule = MNISTDataModule(subset=64, batch_size=16, binarization="dynamic", seed=5)
        datamodule.setup("fit")
        datamodule.load_state_dict(state)
        return next(iter(datamodule.train_dataloader()))[0]
    cpu_state = {"train_order": torch.Generator().manual_seed(5).get_state(),
                 "binarization": torch.Generator().manual_seed(9).get_state()}
    from_gpu = {**cpu_state, "binarization": torch.zeros(16, dtype=torch.uint8)}
    assert not torch.equal(first_batch(cpu_state), first_batch(from_gpu))  # the saved stream, and a restart
    assert "it restarts from --seed 5 and epoch 1" in capsys.readouterr().out  # no trainer: the first epoch
    restarted = int(np.random.SeedSequence([5, 1]).generate_state(1)[0])  # not the run's first stream (seed 5) again
    assert torch.equal(first_batch(from_gpu), first_batch({**cpu_state, "binarization":
                                                           torch.Generator().manual_seed(restarted).get_state()}))
    assert not torch.equal(first_batch(from_gpu), first_batch({**cpu_state, "binarization":
                                                               torch.Generator().manual_seed(5).get_state()}))
