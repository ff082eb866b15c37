"""Generate the Python modules for proto/avadios/v1 into src/avadios/v1 (never committed)."""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "src"


def main() -> int:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / "avadios" / "v1").glob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")  # google/protobuf/*.proto
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={OUT_DIR}",
        f"--pyi_out={OUT_DIR}",
        f"--grpc_python_out={OUT_DIR}",
        *protos,
    ]
    rc = protoc.main(args)
    if rc != 0:
        print(f"protoc failed with exit code {rc}", file=sys.stderr)
        return rc
    (OUT_DIR / "avadios" / "v1" / "__init__.py").write_text('"""Generated from proto/avadios/v1."""\n')
    print(f"generated {len(protos)} proto files into {OUT_DIR / 'avadios' / 'v1'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
