"""What a user sees on the console: progress on a terminal and in logs, --quiet/--verbose, --version, completion."""
from __future__ import annotations

import importlib.metadata
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cnnforge
from cnnforge.rundir.table import format_duration
from cnnforge.training.progress import epoch_line
from tests.conftest import ROOT, cli, cli_here, one_error_line

DIGITS = str(ROOT / "recipes" / "digits_convnet.yaml")
PLAIN_EPOCH = re.compile(r"^epoch (\d+)/2  train/loss \d+\.\d{4}  val/loss \d+\.\d{4}  val/acc \d\.\d{4}  "
                         r"\d+ img/s  eta \d+:\d\d$")


def _quick(tmp: Path, epochs: int = 2) -> list[str]:
    return ["data.num_workers=0", "data.batch_size=64", f"train.epochs={epochs}", f"train.out_dir={tmp}"]


def test_logs_get_one_compact_line_per_epoch_and_no_dependency_warnings(tmp_path: Path) -> None:
    proc = cli("run", DIGITS, *_quick(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    epochs = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert [PLAIN_EPOCH.match(line).group(1) for line in epochs] == ["1", "2"], proc.stdout  # type: ignore[union-attr]
    assert "\r" not in proc.stdout and "\x1b" not in proc.stdout  # no bar, no colour codes in a log file
    assert proc.stdout.splitlines()[-1].startswith("run directory: ")
    assert proc.stderr.strip() == "", proc.stderr[-3000:]  # nothing from torch/accelerate/sklearn a user cannot act on


def test_quiet_prints_no_progress_and_verbose_prints_every_metric(tmp_path: Path) -> None:
    quiet = cli("run", DIGITS, *_quick(tmp_path / "q", epochs=1), "--quiet", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert "epoch" not in quiet.stdout and quiet.stderr.strip() == ""
    verbose = cli("run", DIGITS, *_quick(tmp_path / "v", epochs=1), "--verbose", cwd=tmp_path)
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    line = next(line for line in verbose.stdout.splitlines() if line.startswith("epoch 1/1"))
    for key in ("train/acc", "lr", "time/epoch_s", "val/acc"):
        assert f"  {key} " in line, line
    noisy = [line for line in verbose.stderr.splitlines() if re.search(r"findfont|STREAM b'|Successfully logged", line)]
    assert not noisy, noisy[:5]  # --verbose is about cnnforge, not every library's debug log


def _run_in_terminal(args: list[str], cwd: Path, timeout: float = 600) -> str:
    """The bytes a terminal would show for ``cnnforge ARGS`` (stdout and stderr on one pseudo-terminal)."""
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "140", "LINES": "40"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "cnnforge"), *args], cwd=cwd, env=env,
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.wait(timeout=600) == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    return b"".join(chunks).decode(errors="replace")


def test_terminal_gets_a_live_bar_with_loss_rate_and_eta(tmp_path: Path) -> None:
    screen = _run_in_terminal(["run", DIGITS, *_quick(tmp_path, epochs=1), "data.batch_size=16"], cwd=tmp_path)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    assert re.search(r"epoch 1/1 .*\d+/\d+ +loss \d+\.\d{4} +\d+\.\d it/s +eta \d+:\d\d", plain), plain[-3000:]
    assert "\x1b[" in screen  # the bar redraws in place
    assert re.search(r"^epoch 1/1  train/loss", plain.replace("\r", "\n"), re.M)  # epoch lines stay above the bar
    assert "run directory:" in plain


def test_epoch_line_is_compact_and_verbose_adds_the_rest() -> None:
    row = {"epoch": 3, "train/loss": 0.43123, "train/acc": 0.8, "lr": 0.0025, "time/epoch_s": 1.23456,
           "train/samples_per_s": 1234.4, "val/loss": 0.392, "val/acc": 0.91234}
    assert epoch_line(row, 15,
                      41) == "epoch 3/15  train/loss 0.4312  val/loss 0.3920  val/acc 0.9123  1234 img/s  eta 0:41"
    assert epoch_line(row, 15, None, verbose=True) == ("epoch 3/15  train/loss 0.4312  train/acc 0.8000  lr 0.0025  "
                                                       "time/epoch_s 1.23s  val/loss 0.3920  val/acc 0.9123  "
                                                       "1234 img/s")
    assert [format_duration(s) for s in (5, 75, 3725)] == ["0:05", "1:15", "1:02:05"]


def test_version_names_the_installed_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    proc = cli_here(capsys, "--version")
    assert proc.returncode == 0
    installed = importlib.metadata.version("cnnforge")
    assert proc.stdout.strip() == f"cnnforge {cnnforge.__version__}" == f"cnnforge {installed}"


def _complete(script: Path, words: list[str], cwd: Path) -> list[str]:
    """COMPREPLY of the bash completion function for the command line ``words`` (last word being typed)."""
    body = (f"source {script}; COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}; "
            'COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}; _shtab_cnnforge; printf "%s\\n" "${COMPREPLY[@]}"')
    out = subprocess.run(["bash", "-c", body], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return sorted(line for line in out.stdout.splitlines() if line)


def test_bash_completion_knows_commands_choices_and_recipe_files(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    proc = cli_here(capsys, "completion", "bash")
    assert proc.returncode == 0, proc.stderr
    script = tmp_path / "cnnforge.bash"
    script.write_text(proc.stdout)
    assert "run" in _complete(script, ["cnnforge", ""], tmp_path)
    assert _complete(script, ["cnnforge", "li"], tmp_path) == ["list"]
    assert _complete(script, ["cnnforge", "list", ""], tmp_path) == [
        "augmentations", "callbacks", "datasets", "losses", "models", "optimizers", "plugins", "recipes", "schedules"]
    (tmp_path / "a.yaml").write_text("name: a\n")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "recipes").mkdir()
    assert _complete(script, ["cnnforge", "run", ""], tmp_path) == ["a.yaml", "recipes"]
    assert "--quiet" in _complete(script, ["cnnforge", "run", "--q"], tmp_path)


def test_completion_install_writes_into_a_fresh_home(tmp_path: Path) -> None:
    home = tmp_path / "home"  # a new user's home: no ~/.local/share yet
    env = {"HOME": str(home), "XDG_DATA_HOME": "", "BASH_COMPLETION_USER_DIR": ""}
    proc = cli("completion", "bash", "--install", env=env)
    assert proc.returncode == 0, proc.stderr
    script = home / ".local" / "share" / "bash-completion" / "completions" / "cnnforge"
    assert proc.stdout.startswith(f"wrote {script}; ")
    assert script.read_text() == cli("completion", "bash").stdout
    assert _complete(script, ["cnnforge", "li"], tmp_path) == ["list"]
    proc = cli("completion", "zsh", "--install", env=env)
    assert proc.returncode == 0 and (home / ".zfunc" / "_cnnforge").is_file() and "fpath+=(~/.zfunc)" in proc.stdout
    (tmp_path / "a-file").write_text("")  # a home that is not a folder: one line, exit 1
    proc = cli("completion", "tcsh", "--install", env={**env, "HOME": str(tmp_path / "a-file")})
    assert proc.returncode == 1
    script = tmp_path / "a-file" / ".cnnforge.completion.csh"
    assert f"{script}: cannot write the completion script" in one_error_line(proc)


@pytest.mark.parametrize("shell, marker", [("zsh", "#compdef cnnforge"), ("tcsh", "complete cnnforge")])
def test_zsh_and_tcsh_scripts_are_generated(shell: str, marker: str, capsys: pytest.CaptureFixture[str]) -> None:
    proc = cli_here(capsys, "completion", shell)
    assert proc.returncode == 0, proc.stderr
    assert marker in proc.stdout and "list" in proc.stdout and "completion" in proc.stdout


def test_unknown_shell_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    proc = cli_here(capsys, "completion", "fish")
    assert proc.returncode == 2 and "invalid choice: 'fish'" in proc.stderr
