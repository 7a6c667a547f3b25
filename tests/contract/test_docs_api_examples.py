"""docs/api.md's curl examples work: every ```bash block, in order, as one script against the live stack
(only BASE and TOKEN are pointed at it), as the demo user ``make run`` creates."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
BLOCK = re.compile(r"```bash\n(.*?)```", re.S)

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def script(base: str, token: str) -> str:
    text = "\n".join(BLOCK.findall(DOC.read_text()))
    text, based = re.subn(r"^BASE=.*$", f"BASE={base}", text, flags=re.M)
    text, tokened = re.subn(r"^TOKEN=.*$", f"TOKEN={token}", text, flags=re.M)
    assert based == tokened == 1, "docs/api.md sets BASE and TOKEN once"
    return "set -euo pipefail\n" + text.replace("sleep 1", "sleep 1.5")


def test_every_curl_example_in_docs_api_runs(stack, demo_user, tmp_path):
    result = subprocess.run(["bash", "-c", script(stack.api_url, demo_user.token)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    out = result.stdout
    assert '"userId":"user-123"' in out.replace(" ", "") or '"id":"user-123"' in out.replace(" ", "")
    assert "How can I automate my research workflow?" in out and '"role":"assistant"' in out.replace(" ", "")
    # the documented error bodies are the real ones
    assert '"statusCode":400' in out.replace(" ", "") and "Unknown model 'no-such-model'." in out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith('{"detail"')]
    assert {"loc": ["query", "limit"], "type": "value_error",
            "msg": "Must be greater than or equal to 1 and less than or equal to 100."} in lines[0]["detail"]
    assert lines[1] == {"detail": [{"loc": ["path", "thread_id"], "msg": "Not a valid UUID.", "type": "uuid_parsing"}]}
    assert (tmp_path / "cookies.txt").exists()
