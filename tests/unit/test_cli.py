"""The command line: generate without ComfyUI, command dispatch."""

from __future__ import annotations

import pytest
from PIL import Image

from lumina_tools.__main__ import main
from lumina_tools.demo_model import write_demo_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_demo_model(tmp_path_factory.mktemp("cli") / "demo")


def test_generate_writes_png_of_requested_size(model, tmp_path, capsys):
    out = tmp_path / "img.png"
    rc = main(["generate", "--model", str(model), "--prompt", "a red circle", "--size", "32x48", "--seed", "3",
               "--cfg", "3.0", "--out", str(out), "--device", "cpu", "--batch", "2"])
    assert rc == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out), str(tmp_path / "img_1.png")]
    assert Image.open(out).size == (32, 48)


def test_generate_reports_bad_size(model, tmp_path, capsys):
    rc = main(["generate", "--model", str(model), "--prompt", "x", "--size", "30x48",
               "--out", str(tmp_path / "o.png")])
    assert rc == 1
    assert "multiples of 16" in capsys.readouterr().err


def test_dispatch(capsys):
    assert main(["--help"]) == 0
    assert "run-workflow" in capsys.readouterr().out
    assert main(["no-such-command"]) == 2


@pytest.mark.parametrize("flag, value, words", [
    ("--prompt", "a red \udcff circle", "lone surrogate"),
    ("--prompt", "a red \x00 circle", "control character"),
    ("--cfg", "nan", "--cfg must be a finite number"),
    ("--temperature", "inf", "--temperature must be a finite number"),
])
def test_generate_refuses_what_the_nodes_refuse(model, tmp_path, capsys, flag, value, words):
    args = {"--prompt": "a red circle", "--cfg": "3.0", "--temperature": "1.0", flag: value}
    argv = ["generate", "--model", str(model), "--size", "32x32", "--out", str(tmp_path / "o.png")]
    for key, val in args.items():
        argv += [key, val]
    assert main(argv) == 1
    assert words in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_generate_with_int8_weights(model, tmp_path, capsys):
    out = tmp_path / "q.png"
    rc = main(["generate", "--model", str(model), "--prompt", "a red circle", "--size", "32x32", "--seed", "1",
               "--out", str(out), "--device", "cpu", "--quant", "int8"])
    assert rc == 0 and Image.open(out).size == (32, 32)
    with pytest.raises(SystemExit):
        main(["generate", "--model", str(model), "--prompt", "x", "--quant", "int4"])
    assert "invalid choice: 'int4'" in capsys.readouterr().err
