"""The code-execution attack of the issue: a shared library uploaded as "npz", cached on the device
at a predictable path, then named as a TFLite delegate, ran its constructor as root in the
benchmark process. Now the controller stores only files that are what their format says, and a
device loads only the delegates its profile allow-lists, never a file under its data directory;
anything else fails as `configuration` before a benchmark process starts."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import textwrap

import grpc
import pytest

from hilfarm.v1 import farm_pb2 as pb

from .conftest import refusal

QUICK = ["--runs", "3", "--min-seconds", "0", "--warmup", "0", "--warmup-seconds", "0"]


@pytest.fixture(scope="module")
def evil_library(tmp_path_factory):
    """A shared library whose constructor records that it ran, and as whom."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler: scripts/test.sh installs gcc for this test", pytrace=False)
    root = tmp_path_factory.mktemp("evil")
    marker = root / "constructor-ran.txt"
    source = root / "evil.c"
    source.write_text(textwrap.dedent(f"""
        #include <stdio.h>
        #include <unistd.h>
        __attribute__((constructor)) static void owned(void) {{
            FILE *f = fopen("{marker}", "w");
            if (f) {{ fprintf(f, "uid=%d\\n", (int)getuid()); fclose(f); }}
        }}
    """))
    library = root / "libevil.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    return library, marker


def test_a_library_is_not_stored_whatever_format_it_claims(shared_farm, evil_library):
    library, _ = evil_library
    user = shared_farm.caller(shared_farm.user_token("submitter"))
    for fmt in ("npz", "onnx", "tflite"):
        err = refusal(lambda: user.upload(library.read_bytes(), fmt=fmt, filename=f"inputs.{fmt}"))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and f"is not a valid {fmt} file" in err.details()
    sha = hashlib.sha256(library.read_bytes()).hexdigest()
    assert not user.farm.StatArtifact(pb.StatArtifactRequest(sha256=sha)).present
    # An npz holding a pickle is refused too: the farm loads arrays with allow_pickle=False.
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, x=np.array([{"payload": 1}], dtype=object))
    err = refusal(lambda: user.upload(buf.getvalue(), fmt="npz", filename="inputs.npz"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "pickle" in err.details()
    assert shared_farm.serving()


def _profile(path, delegates: dict) -> str:  # type: ignore[no-untyped-def]
    lines = "".join(f"    {name}: {library}\n" for name, library in delegates.items())
    path.write_text("name: local\ndescription: this machine, with allow-listed delegates\nextends: local\n"
                    f"runtimes:\n  delegates:\n{lines}")
    return str(path)


def test_a_delegate_runs_only_from_the_profiles_allow_list(make_farm, evil_library, models, tmp_path):
    pytest.importorskip("ai_edge_litert", reason="needs a TFLite interpreter on the agent")
    library, marker = evil_library
    farm = make_farm()
    agent_dir = farm.root / "coral"
    # The device owner installed one library outside the agent's data dir and allow-listed it,
    # and (misconfigured) also named a path inside the data dir.
    installed = tmp_path / "installed" / "libowner.so"
    installed.parent.mkdir()
    shutil.copy(library, installed)
    cached = agent_dir / "artifacts" / "ab" / ("ab" + "0" * 62)
    profile = _profile(tmp_path / "coral.yaml", {"owner-lib": str(installed), "cache-lib": str(cached)})
    farm.start_agent("coral", profile=profile, enroll_token=farm.enrollment_token("local", agent_id="coral"))
    farm.wait_for_device("coral")
    # However the library got into the data dir (the cache, before this was fixed), it is there.
    uploaded = agent_dir / "artifacts" / "cd" / ("cd" + "1" * 62)
    for path in (cached, uploaded):
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(library, path)
    user = farm.token

    def run(delegate: str) -> dict:
        done = farm.cli("submit", str(models["tflite"]), "--device", "local", "--delegate", delegate,
                        *QUICK, "--wait", "--json", token=user)
        assert done.stdout, done.stderr
        return json.loads(done.stdout)["jobs"][0]

    for delegate, says in ((str(uploaded), "is not allow-listed in device profile local"),
                           (str(cached), "inside the agent's data directory"),
                           ("cache-lib", "inside the agent's data directory"),
                           ("/lib/x86_64-linux-gnu/libc.so.6", "is not allow-listed")):
        job = run(delegate)
        assert job["state"] == "failed" and job["failure"]["category"] == "configuration", job["failure"]
        assert says in job["failure"]["message"]
        assert job["progress"]["phase"] != "loading", "a benchmark process started"
        assert not marker.exists(), "the library's constructor ran"

    # What the owner allow-listed is loaded (it is no TFLite delegate, so loading fails after its
    # constructor ran) inside the benchmark process's namespaces: not as root there.
    job = run("owner-lib")
    assert job["state"] == "failed" and job["failure"]["category"] == "device_fault", job["failure"]
    assert "could not load the TFLite delegate" in job["failure"]["message"]
    assert marker.exists()
    assert marker.read_text().strip() != "uid=0"
    assert farm.serving()
