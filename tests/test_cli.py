"""The model-side commands as a user runs them: make-tiny, convert, generate, and a clear error for a bad path."""

import json

from ernie_vl_cli import main


def test_make_tiny_convert_and_generate(tmp_path, capsys):
    ckpt = tmp_path / "tiny"
    assert main(["make-tiny", str(ckpt), "--seed", "3"]) == 0
    assert json.loads((ckpt / "config.json").read_text())["model_type"] == "ernie4_5_vl_moe"
    assert main(["convert", str(ckpt), str(tmp_path / "orig")]) == 0
    assert (tmp_path / "orig" / "tokenizer.json").exists()
    capsys.readouterr()
    assert main(["generate", "--model", str(tmp_path / "orig"), "--prompt", "Hello", "--max-new-tokens", "4"]) == 0
    a = capsys.readouterr().out
    assert main(["generate", "--model", str(ckpt), "--prompt", "Hello", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out == a  # same weights in either layout, same greedy answer


def test_bad_paths_give_one_clear_error(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "no config.json at" in capsys.readouterr().err
