"""Result files: written whole, and on several processes by process 0 alone."""

from dpo_jax.analysis import results


def test_only_process_zero_writes(tmp_path, monkeypatch):
    assert results.write_json(tmp_path / "a.json", {"x": float("nan")}).read_text() == '{\n  "x": null\n}\n'
    monkeypatch.setattr(results, "writes_outputs", lambda: False)
    assert results.write_jsonl(tmp_path / "b.jsonl", [{"x": 1}]) == tmp_path / "b.jsonl"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
