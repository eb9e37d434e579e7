"""The README's commands run as pasted: every ``lesionmix`` line parses, and the CarveMix block runs.

The bash blocks are read the way bash would read them for what matters here:
continuation lines joined, ``NAME=value`` (and ``export NAME=value``)
assignments kept and ``$NAME``/``${NAME}`` expanded, comments dropped. Each
``lesionmix`` command is then parsed by the CLI's own argparse parser (no run):
an unknown command, an unknown flag, a bad value or a placeholder such as a
literal ``...`` fails with the README line.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from napari_lesionmix.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
VAR = re.compile(r"\$(\w+)|\$\{(\w+)\}")
# Set by the shell or the user, not by the README: stand-ins so that lines using them parse.
ENVIRONMENT = {"PWD": "/work", "PARAMS_JSON": "{}"}


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def logical_lines(block: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", block)
    return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def expand(line: str, env: dict[str, str]) -> str:
    def value(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in env:
            raise AssertionError(f"README line uses ${name}, which no earlier line sets: {line}")
        return env[name]

    # $(...) substitutions are run by bash, not by us: only the plain variables are expanded.
    return VAR.sub(value, line)


def lesionmix_commands() -> list[tuple[str, list[str]]]:
    """``(README line, argv after 'lesionmix')`` of every lesionmix command of every bash block, in order."""
    env = dict(ENVIRONMENT)
    found = []
    for block in bash_blocks(README.read_text()):
        for line in logical_lines(block):
            code = line.split(" #")[0].strip()  # a trailing comment
            words = shlex.split(code.removeprefix("export "), comments=False) if "$(" not in code else []
            if words and all(re.match(r"^\w+=", w) for w in words):  # NAME=value [NAME=value ...]
                for w in words:
                    name, val = w.split("=", 1)
                    env[name] = expand(val, env)
                continue
            if code.startswith("lesionmix "):
                found.append((line, shlex.split(expand(code, env))[1:]))
    return found


COMMANDS = lesionmix_commands()


def test_the_readme_has_the_commands_it_should():
    names = {argv[0] for _, argv in COMMANDS}
    assert {"carvemix", "softcp", "lesionmix", "mixup", "cutmix", "likelihood", "harmonize", "train-harmonizer",
            "export", "verify", "gallery", "evaluate", "nnunet-train"} <= names
    text = README.read_text()
    assert "source .venv/bin/activate" in text
    assert "nnUNet_n_proc_DA=0 nnUNetv2_train" in text and "-device cpu" in text


@pytest.mark.parametrize("line, argv", COMMANDS, ids=[f"{i:02d}-{a[0]}" for i, (_, a) in enumerate(COMMANDS)])
def test_every_readme_command_parses(line, argv, capsys):
    assert "..." not in argv, f"placeholder in a README command: {line}"
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
    except SystemExit:
        pytest.fail(f"lesionmix rejects the README line {line!r}: {capsys.readouterr().err.strip()}")
    assert not unknown, f"flags lesionmix does not know in {line!r}: {unknown}"
    assert getattr(args, "func", None) is not None


def test_the_parse_check_can_fail():
    # The checker itself: a made-up flag and a literal "..." are caught.
    parser = build_parser()
    _, unknown = parser.parse_known_args(["carvemix", "--host-image", "a", "--host-label", "b", "--donor-image",
                                          "c", "--donor-label", "d", "--out", "o", "--no-such-flag"])
    assert unknown == ["--no-such-flag"]
    with pytest.raises(AssertionError, match=r"\$MISSING"):
        expand("lesionmix carvemix $MISSING", {})


def test_the_carvemix_block_runs_as_pasted(tmp_path):
    """The first bash block of the command-line section, pasted into bash in a copy of the layout."""
    block = next(b for b in bash_blocks(README.read_text()) if "lesionmix carvemix $PAIR" in b)
    (tmp_path / "sample_data").symlink_to(ROOT / "sample_data")
    # `lesionmix` as the activated venv gives it: this interpreter's CLI.
    script = f'lesionmix() {{ {shlex.quote(sys.executable)} -m napari_lesionmix.cli "$@"; }}\nset -e\n{block}'
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for out in ("cm", "cm-per-lesion", "cm-3-1", "cm-replay"):
        assert (tmp_path / "out" / out / "label.nii.gz").is_file(), out
    # The replay is the sample it replays.
    assert (tmp_path / "out" / "cm" / "label.nii.gz").read_bytes() == \
        (tmp_path / "out" / "cm-replay" / "label.nii.gz").read_bytes()
