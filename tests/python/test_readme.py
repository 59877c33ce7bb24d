"""The README's Python example, as written there, against a node loaded by `vektagraf load-demo`."""

import os
import re
import subprocess
import threading
import warnings

from conftest import REPO, _binary


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(r"```python\n(.*?)```", text, re.S)
    assert m, "README.md has no ```python block"
    return m.group(1)


def test_readme_python_example_runs(node, tmp_path, capsys):
    env = dict(os.environ, VEKTAGRAF_REMOTE=node.quic, VEKTAGRAF_TOKEN=node.admin_token,
               VEKTAGRAF_CA=str(node.data / "tls" / "ca.pem"))
    done = subprocess.run([str(_binary()), "load-demo"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    code = readme_example()
    # The example names the default address and token file; point them at this node.
    assert "http://127.0.0.1:7480" in code and "vektagraf-data/admin.token" in code, code
    code = code.replace("http://127.0.0.1:7480", node.url)
    code = code.replace("vektagraf-data/admin.token", str(node.data / "admin.token"))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        exec(compile(code, "README.md", "exec"), {})
        # qdrant-client checks the server's version on a thread of its own: let it finish.
        for t in threading.enumerate():
            if "compatibility" in t.name:
                t.join(timeout=30)
    printed = capsys.readouterr().out
    # The client accepts the node's version without a warning (the insecure-key one aside).
    version = [str(w.message) for w in seen if "version" in str(w.message)]
    assert not version, version
    # Five neighbours of `vim` by its stored vector: other vim packages, in the editors section.
    ids = re.findall(r"id='([^']+)'", printed)
    assert len(ids) == 5 and "vim" not in ids, printed
    assert sum(i.startswith("vim") for i in ids) >= 3, printed
    assert "'section': 'editors'" in printed, printed
