"""The cache root follows the environment at each call; provenance names the commit and the command."""

import subprocess
from pathlib import Path

from tpem_seg.util.cache import cache_root
from tpem_seg.util.provenance import process_command, source_commit


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("TPEM_SEG_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "tpem-seg"
    monkeypatch.setenv("TPEM_SEG_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv("TPEM_SEG_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == Path.home() / ".cache" / "tpem-seg"


def test_source_commit_agrees_with_git():
    root = Path(__file__).resolve().parents[2]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        assert source_commit() is None
        return
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    assert source_commit() == head.stdout.strip() + ("+dirty" if dirty else "")


def test_process_command_names_the_cli_as_its_script():
    main = str(Path("site-packages") / "tpem_seg" / "cli" / "__main__.py")
    assert process_command([main, "train", "finetune", "--set", "lr=1e-3 x"]) == \
        "tpem-seg train finetune --set 'lr=1e-3 x'"
    assert process_command(["/usr/bin/tpem-seg", "run", "a.tif"]) == "tpem-seg run a.tif"
    assert process_command(["bench_gpu.py", "--model", "m"]) == "bench_gpu.py --model m"
