"""User mistakes end in one `error:` line and exit 2, never a traceback (issue 23 #15)."""

import gzip
import json

import pytest

from wit_builder.cli import main
from wit_builder.queries.listfile import FORMAT

SECRET = "wJalrXUtnFEMI-K7MDENG-SECRET"


def _code(argv) -> int:
    """main's exit status (argument errors exit from the parser)."""
    try:
        return main(argv)
    except SystemExit as done:
        return done.code


def _one_error_line(capsys, code: int) -> str:
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    return captured.err


@pytest.mark.parametrize("out", ["a_file", "a_file/below", "/proc/wit-builder-out"])
def test_out_that_is_a_file_or_unwritable(tmp_path, capsys, out):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "c.jsonl").write_text('{"url": "http://a.example/1.jpg", "text": "a cat"}\n')
    out = out if out.startswith("/") else str(tmp_path / out)
    for argv in (["extract", "--input", str(tmp_path / "c.jsonl"), "--out", out],
                 ["curate", "--input", str(tmp_path / "c.jsonl"), "--out", out]):
        err = _one_error_line(capsys, _code(argv))
        assert "is a file, not a folder" in err or "cannot write in" in err


def test_config_that_is_not_utf8(tmp_path, capsys):
    (tmp_path / "bad.toml").write_bytes(b'[spark]\nmaster = "\xff\xfe"\n')
    err = _one_error_line(capsys, _code(["config", "--config", str(tmp_path / "bad.toml")]))
    assert "not UTF-8" in err


@pytest.mark.parametrize("content", [
    json.dumps({"format": FORMAT}),
    json.dumps({"format": FORMAT, "entries": [1, 2]}),
    json.dumps({"format": FORMAT, "entries": [{"id": 0, "text": 5}]}),
    json.dumps({"format": FORMAT, "entries": {"id": 0}}),
    "[" * 100_000,
    gzip.compress(b'["a", "b"]')[:-6],  # cut
])
def test_malformed_query_list(tmp_path, capsys, content):
    path = tmp_path / "queries.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    (tmp_path / "c.jsonl").write_text('{"url": "http://a.example/1.jpg", "text": "a cat"}\n')
    err = _one_error_line(capsys, _code(["match", "--input", str(tmp_path / "c.jsonl"), "--out",
                                        str(tmp_path / "OUT"), "--queries", str(path)]))
    assert "query list" in err


@pytest.mark.parametrize("manifest", [b"\xff\x00garbage", b"{not json", b"[1, 2]", b'"x"'])
def test_garbage_manifest_in_an_input_folder(tmp_path, capsys, manifest):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "manifest.json").write_bytes(manifest)
    (folder / "_SUCCESS").write_bytes(b"")
    err = _one_error_line(capsys, _code(["filter", "--input", str(folder), "--out",
                                        str(tmp_path / "OUT")]))
    assert "manifest.json is not a stage manifest" in err


def test_stage_folder_without_rows(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "manifest.json").write_text("{}")
    (folder / "_SUCCESS").write_bytes(b"")
    err = _one_error_line(capsys, _code(["filter", "--input", str(folder), "--out",
                                        str(tmp_path / "OUT")]))
    assert "holds no Parquet rows" in err


@pytest.mark.parametrize("argv", [
    ["doctor", "--conf", f"spark.hadoop.fs.s3a.secret.key={SECRET}"],
    ["config", "--conf", f"spark.hadoop.fs.s3a.secret.key={SECRET}"],
    ["config", f"--conf=spark.hadoop.fs.s3a.secret.key={SECRET}"],
    ["extract", "--input", "x", "--out", "y", "--conf", f"hadoop.fs.s3a.secret.key={SECRET}"],
    ["config", "--set", "balance.t=1", SECRET],
])
def test_options_are_never_abbreviated_nor_their_values_repeated(capsys, argv):
    """`--conf` where only `--config` exists was read as `--config` (argparse's prefix
    matching), and the error named the secret as a missing config file."""
    err = _one_error_line(capsys, _code(argv))
    assert SECRET not in err and "config file" not in err


# --- issue 23 #9: one address policy for every network read ----------------------------------

def test_reads_outside_the_stage_inputs_connect_to_no_internal_address(internal_listeners,
                                                                       tmp_path, capsys):
    """`stats URL`, `eval --checkpoint URL`, `match --queries URL` connected to an internal
    address; every http(s) read through storage now connects only to checked addresses (the
    listeners fail the test if anything reached them)."""
    (v4, port), (v6, port6) = internal_listeners
    (tmp_path / "c.tsv").write_text("path\tcaption\na.jpg\ta cat\n")
    (tmp_path / "c.jsonl").write_text('{"url": "http://a.example/1.jpg", "text": "a cat"}\n')
    for argv in (["stats", f"http://{v4}:{port}/OUT"],
                 ["eval", "--checkpoint", f"http://[{v6}]:{port6}/LATEST.pt",
                  "--retrieval", str(tmp_path / "c.tsv")],
                 ["match", "--input", str(tmp_path / "c.jsonl"), "--out", str(tmp_path / "OUT"),
                  "--queries", f"http://{v4}:{port}/queries.json"]):
        err = _one_error_line(capsys, _code(argv))
        assert "refusing" in err and "loopback" in err, argv


def test_conf_without_a_value_names_conf(tmp_path, capsys):
    err = _one_error_line(capsys, _code(["extract", "--input", str(tmp_path), "--out",
                                        str(tmp_path / "OUT"), "--conf", "spark.ui.enabled"]))
    assert "--conf spark.ui.enabled" in err and "KEY=VALUE" in err and "--set" not in err


# --- issue 25: a file not in the format given for it ------------------------------------------

@pytest.mark.parametrize("given, fmt", [("candidates/alt_text_pairs.jsonl", "parquet"),
                                        ("candidates/img2dataset_10k.parquet", "jsonl"),
                                        ("candidates/img2dataset_10k.parquet", "csv"),
                                        ("candidates/alt_text_pairs.jsonl", "warc"),
                                        ("candidates/img2dataset_10k.parquet", "wat"),
                                        ("crawl/warc/cc_whirlwind.warc.gz", "jsonl")])
def test_a_file_not_in_the_given_format_is_one_error(shared_data, tmp_path, capsys, given, fmt):
    """A JSONL file given `--format parquet` ended with exit 0 and one `corrupt_record` drop."""
    err = _one_error_line(capsys, _code(["extract", "--input", str(shared_data / given),
                                        "--format", fmt, "--out", str(tmp_path / "OUT")]))
    assert f"{given.split('/')[-1]} is not a {fmt} file" in err and "--format" in err


def _cut_copy(src, dst, keep: float = 0.5):
    data = src.read_bytes()
    dst.write_bytes(data[:int(len(data) * keep)])


def test_a_wrong_file_among_good_ones_is_an_error_a_damaged_one_a_drop(shared_data, tmp_path, capsys):
    """The check before the run reads the first file; the tasks find the others."""
    real = shared_data / "candidates"
    good, mixed = tmp_path / "good", tmp_path / "mixed"
    for folder in (good, mixed):
        folder.mkdir()
        (folder / "a.jsonl").write_bytes((real / "alt_text_pairs.jsonl").read_bytes())
        _cut_copy(real / "alt_text_pairs.jsonl", folder / "b.jsonl")  # a line cut: damaged
    (mixed / "c.jsonl").write_bytes((real / "img2dataset_10k.parquet").read_bytes())
    argv = ["extract", "--set", "extract.page_url_column=page_url", "--out"]

    assert _code(argv + [str(tmp_path / "OUT1"), "--input", str(good)]) == 0
    manifest = json.loads((tmp_path / "OUT1" / "extract" / "manifest.json").read_text())
    assert manifest["drops"]["corrupt_record"] == 1 and manifest["files"] == 2
    capsys.readouterr()
    err = _one_error_line(capsys, _code(argv + [str(tmp_path / "OUT2"), "--input", str(mixed)]))
    assert "1 input file(s) are not in their format" in err


def test_a_damaged_parquet_file_among_good_ones_is_a_counted_drop(shared_data, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.parquet").write_bytes((shared_data / "candidates/img2dataset_10k.parquet").read_bytes())
    _cut_copy(shared_data / "candidates/img2dataset_10k.parquet", folder / "b.parquet")  # PAR1, no footer
    assert _code(["extract", "--input", str(folder), "--out", str(tmp_path / "OUT")]) == 0
    manifest = json.loads((tmp_path / "OUT" / "extract" / "manifest.json").read_text())
    assert manifest["drops"]["corrupt_record"] == 1 and manifest["records_read"] >= 10_000
