"""Generate the Python messages, gRPC stubs and their .pyi typing from proto/.

One command (`make proto`) runs this; the output under
clients/python/scriptgen/v1/ is committed, and tests/test_proto_drift.py fails
when it no longer matches what this script produces from proto/.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
THIRD_PARTY = ROOT / "third_party" / "googleapis"
OUTPUT_ROOT = ROOT / "clients" / "python"
PACKAGE_DIR = Path("scriptgen") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _grpc_tools_include() -> Path:
    import grpc_tools

    return Path(grpc_tools.__file__).resolve().parent / "_proto"


def generate(output_root: Path) -> list[Path]:
    """Run protoc into `output_root`; return the generated files."""
    protos = sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    bin_dir = Path(sys.executable).parent
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{THIRD_PARTY}",
        f"-I{_grpc_tools_include()}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={output_root}",
        f"--mypy_out={output_root}",
        f"--grpc_python_out={output_root}",
        f"--mypy_grpc_out={output_root}",
        *[str(p.relative_to(PROTO_ROOT)) for p in protos],
    ]
    subprocess.run(command, check=True, cwd=ROOT)
    return sorted(
        p for p in (output_root / PACKAGE_DIR).iterdir() if p.name.endswith(GENERATED_SUFFIXES)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed code drifted")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        fresh = generate(Path(scratch))
        target = OUTPUT_ROOT / PACKAGE_DIR
        drifted = []
        for path in fresh:
            committed = target / path.name
            if not committed.exists() or committed.read_bytes() != path.read_bytes():
                drifted.append(path.name)
        stale = [
            p.name
            for p in target.iterdir()
            if p.name.endswith(GENERATED_SUFFIXES) and p.name not in {f.name for f in fresh}
        ]
        if args.check:
            if drifted or stale:
                print(f"generated code drifted from proto/: {sorted(drifted + stale)}")
                print("run `make proto` and commit the result")
                return 1
            return 0
        for name in stale:
            (target / name).unlink()
        for path in fresh:
            shutil.copyfile(path, target / path.name)
        print(f"wrote {len(fresh)} files to {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
