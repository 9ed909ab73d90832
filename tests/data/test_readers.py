"""Finding the rows of a split: local files and directories, errors that name paths and columns."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dpo_jax import UserError
from dpo_jax.data import build_datasets, fixture_dir
from dpo_jax.data.readers import open_split
from tests.data.data_helpers import data_config, read_jsonl, write_jsonl

PAIR = {"prompt": "Q:", "chosen": " good", "rejected": " bad"}


def _rows(table):
    return [record for _, record in table.rows()]


def test_missing_file_names_the_path(tokenizer):
    with pytest.raises(FileNotFoundError, match="/no/such/dir/pairs.jsonl"):
        build_datasets(data_config(source="local", path="/no/such/dir/pairs.jsonl"), tokenizer, stage="dpo")


def test_missing_columns_name_the_path_and_the_columns(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "train.jsonl", [{"chosen": "\n\nHuman: a\n\nAssistant: b"}])
    with pytest.raises(ValueError, match=r"train.jsonl.*\['rejected'\]"):
        build_datasets(data_config(path=path, eval_split=""), tokenizer, stage="dpo")
    parquet = tmp_path / "shp.parquet"
    pq.write_table(pa.Table.from_pylist([{"history": "h", "human_ref_A": "a"}]), parquet)
    with pytest.raises(ValueError, match=r"shp.parquet.*'human_ref_B', 'labels', 'score_ratio'"):
        build_datasets(data_config(source="shp", path=str(parquet), eval_split=""), tokenizer, stage="dpo")
    with pytest.raises(ValueError, match=r"other.jsonl: columns \['text'\] match no local schema"):
        path = write_jsonl(tmp_path / "other.jsonl", [{"text": "x"}])
        build_datasets(data_config(source="local", path=path, eval_split=""), tokenizer, stage="dpo")


def test_directory_without_the_split_lists_what_it_has(tmp_path, tokenizer):
    write_jsonl(tmp_path / "train.jsonl", [PAIR] * 4)
    with pytest.raises(FileNotFoundError, match=r"no files for split 'test'.*\['train.jsonl'\]"):
        build_datasets(data_config(source="local", path=str(tmp_path)), tokenizer, stage="dpo")


def test_single_file_has_no_eval_split(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "pairs.jsonl", [PAIR] * 4)
    with pytest.raises(ValueError, match="single file"):
        build_datasets(data_config(source="local", path=path, eval_split="test"), tokenizer, stage="dpo")
    prepared = build_datasets(data_config(source="local", path=path, eval_split=""), tokenizer, stage="dpo")
    assert prepared.eval is None and prepared.cache_hits["eval"] is False


def test_directory_splits_by_name_shards_gzip_and_folders(tmp_path):
    def rows(n):
        return [{**PAIR, "prompt": f"Q{n}:"}]

    (tmp_path / "data").mkdir()
    for i in range(2):
        pq.write_table(pa.Table.from_pylist(rows(i)), tmp_path / "data" / f"train-0000{i}-of-00002.parquet")
    (tmp_path / "helpful-base").mkdir()
    with gzip.open(tmp_path / "helpful-base" / "train.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write(json.dumps(rows(2)[0]) + "\n")
    write_jsonl(tmp_path / "train" / "part.jsonl", rows(3))
    write_jsonl(tmp_path / "train_sft.jsonl", rows(99))  # another split whose name starts with "train"
    write_jsonl(tmp_path / "test.jsonl", rows(4))
    prompts = sorted(record["prompt"] for record in _rows(open_split(str(tmp_path), "train")))
    assert prompts == ["Q0:", "Q1:", "Q2:", "Q3:"]
    assert [r["prompt"] for r in _rows(open_split(str(tmp_path), "test"))] == ["Q4:"]


def test_json_array_files_and_invalid_lines(tmp_path, tokenizer):
    (tmp_path / "train.json").write_text(json.dumps([PAIR] * 3), encoding="utf-8")
    assert len(_rows(open_split(str(tmp_path), "train"))) == 3
    lines = [json.dumps(PAIR), "{not json", json.dumps([1, 2]), "", json.dumps(PAIR)]
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    prepared = build_datasets(
        data_config(source="local", path=str(path), eval_split=""), tokenizer, stage="dpo"
    )
    assert prepared.train.num_examples == 2
    assert prepared.train_report.counts == {"invalid_json": 2}
    assert [s["row"] for s in prepared.train_report.samples] == [2, 3]  # physical lines, from 1


def test_non_utf8_bytes_are_a_counted_row_named_by_its_line(tmp_path, tokenizer, caplog):
    good = json.dumps(PAIR).encode()
    bad = b'{"prompt": "Q:", "chosen": " caf\xe9", "rejected": " bad"}'
    for name, opener in (("train.jsonl", open), ("train.jsonl.gz", gzip.open)):
        path = tmp_path / name
        with opener(path, "wb") as handle:
            handle.write(b"\n".join([good, b"", bad, good]) + b"\n")  # the bad row is on line 3
        prepared = build_datasets(
            data_config(source="local", path=str(path), eval_split=""), tokenizer, stage="dpo"
        )
        assert prepared.train.num_examples == 2
        assert prepared.train_report.counts == {"invalid_utf8": 1}
        (sample,) = prepared.train_report.samples
        assert (sample["file"], sample["row"], sample["unit"]) == (str(path), 3, "line")
        assert "byte 33" in sample["detail"] and "\\xe9" in sample["detail"]
    assert f"{tmp_path / 'train.jsonl'} line 3 (invalid_utf8" in caplog.text


def test_parquet_ranked_responses(tmp_path, tokenizer):
    rows = read_jsonl(fixture_dir("local_ranked") + "/train.jsonl")[:8]
    for split in ("train", "test"):
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / f"{split}.parquet")
    prepared = build_datasets(data_config(source="local", path=str(tmp_path)), tokenizer, stage="dpo")
    assert prepared.num_responses == 3
    assert prepared.train.num_examples == prepared.eval.num_examples == 8


def test_fixture_alias_and_unknown_fixture():
    assert _rows(open_split("fixture:imdb_prefixes", "test")) == read_jsonl(
        fixture_dir("imdb") + "/test.jsonl"
    )
    with pytest.raises(FileNotFoundError, match="no fixture 'nope'"):
        open_split("fixture:nope", "train")


def test_a_truncated_json_array_is_one_error_naming_the_file_and_the_position(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text('[{"prompt": "Q:", "chosen": " a", "rejected": " b"},\n {"prompt": "a"')
    with pytest.raises(UserError, match=r"pairs.json line 2 column 16: not a valid JSON array"):
        open_split(str(path), "train")


@pytest.mark.parametrize("name", ["pairs.jsonl", "pairs.json", "pairs.jsonl.gz"])
def test_a_utf8_byte_order_mark_reads_like_no_mark(tmp_path, name):
    rows = [PAIR, {**PAIR, "prompt": "Q2:"}]
    text = json.dumps(rows) if name == "pairs.json" else "".join(json.dumps(r) + "\n" for r in rows)
    data = b"\xef\xbb\xbf" + text.encode()
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    table = open_split(str(path), "train")
    assert _rows(table) == rows
    assert table.columns == frozenset(PAIR)


def test_an_empty_file_and_a_file_of_invalid_lines_say_so(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(UserError, match=r"empty.jsonl: the file is empty"):
        open_split(str(empty), "train")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": \n[1, 2]\n')
    with pytest.raises(
        UserError,
        match=r"broken.jsonl: all 2 lines are invalid; the first, .*broken.jsonl line 1: "
        r"invalid_json",
    ):
        open_split(str(broken), "train")
