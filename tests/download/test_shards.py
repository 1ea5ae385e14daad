"""shards.py: the shards img2dataset's Reader would make, without img2dataset in the driver."""

import subprocess
import sys

import pyarrow as pa
import pytest
import pyarrow.parquet as pq
from img2dataset.reader import Reader

from wit_builder.download import shards


def _prepared(folder, sizes):
    """Prepared input files (as prepare.py writes them) of `sizes` rows each."""
    folder.mkdir()
    n = 0
    for i, size in enumerate(sizes):
        rows = range(n, n + size)
        pq.write_table(pa.table({
            "uid": [f"u{r:03d}" for r in rows], "url": [f"http://127.0.0.1/{r}.jpg" for r in rows],
            "text": [f"photo {r}" for r in rows], "entry_ids": [[r % 3] for r in rows],
            "entries": [[f"e{r % 3}"] for r in rows], "page_url": [None] * size,
            "source": ["list"] * size, "lang": ["en"] * size, "user_id": [str(r) for r in rows]}),
            folder / f"part-{i:05d}.parquet")
        n += size
    return folder


def _read(path):
    with pa.OSFile(str(path), "rb") as f:
        return pa.ipc.open_file(f).read_all()


def test_same_shards_as_img2dataset_reader(tmp_path):
    folder = _prepared(tmp_path / "in", [7, 3, 0, 5])
    done = {4, 6}
    ours_tmp, theirs_tmp = tmp_path / "ours", tmp_path / "theirs"
    ours_tmp.mkdir(), theirs_tmp.mkdir()
    ours = list(shards._shard_files(str(folder), str(ours_tmp), 3, done, start_shard_id=2))
    reader = Reader(str(folder), "parquet", url_col="url", caption_col="text",
                    verify_hash_col=None, verify_hash_type=None,
                    save_additional_columns=list(shards.EXTRA_COLUMNS), number_sample_per_shard=3,
                    done_shards=done, tmp_path=str(theirs_tmp), start_shard_id=2)
    theirs = list(reader)
    assert reader.column_list == shards.COLUMN_LIST
    assert [i for i, *_ in ours] == [i for i, _ in theirs] == [2, 3, 5, 7]
    assert [rows for *_, rows in ours] == [3, 3, 3, 2]
    for (_, mine, _), (_, other) in zip(ours, theirs):
        assert _read(mine).equals(_read(other))


@pytest.mark.parametrize("sizes,tasks", [([1000, 1000, 1000], 2), ([10, 10, 10], 2),
                                         ([7, 3, 5, 9, 1], 3), ([4], 8), ([5, 5], 2),
                                         ([1000] * 7 + [13], 4)])
def test_tasks_get_even_contiguous_runs_of_rows(sizes, tasks):
    dealt = shards.deal([(i, f"{i}.feather", n) for i, n in enumerate(sizes)], tasks, "out")
    per_task = [sum(p.stop - p.start for p in group) for group in dealt]
    assert len(dealt) == min(tasks, sum(sizes)) and max(per_task) - min(per_task) <= 1
    for shard, n in enumerate(sizes):  # every row of every shard in exactly one piece
        pieces = sorted((p for group in dealt for p in group if p.shard_id == shard),
                        key=lambda p: p.start)
        assert [p.start for p in pieces] == [0, *(p.stop for p in pieces[:-1])]
        assert pieces[-1].stop == n
        if len(pieces) == 1:  # a whole shard goes straight to the output folder
            assert pieces[0].whole and pieces[0].folder == "out"
        else:  # parts, each in a folder of its own
            assert not any(p.whole for p in pieces)
            assert len({p.folder for p in pieces}) == len(pieces)
    if sizes == [1000, 1000, 1000]:
        assert [[(p.shard_id, p.start, p.stop) for p in group] for group in dealt] == [
            [(0, 0, 1000), (1, 0, 500)], [(1, 500, 1000), (2, 0, 1000)]]


def test_the_driver_does_not_import_img2dataset():
    code = ("import sys; import wit_builder.download.stage, wit_builder.download.shards; "
            "print(sorted(m for m in ('img2dataset', 'torch', 'wandb', 'albumentations') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
