"""Regenerates the protobuf and gRPC code in ``services/api/src/shop/v1`` from ``proto/``.

Run ``python proto/generate.py`` (``make proto``; grpcio-tools is in the dev group). The
generated files are committed so that installing grpc-shop-api needs no compiler;
``tests/test_codegen.py`` fails when they are stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
OUTPUT_ROOT = PROTO_ROOT.parent / "services" / "api" / "src"


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    return sorted((proto_root / "shop" / "v1").glob("*.proto"))


def generate(output_root: Path = OUTPUT_ROOT, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Runs protoc into ``output_root`` and returns the files it wrote."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    files = [str(path.relative_to(proto_root)) for path in proto_files(proto_root)]
    args = [
        "protoc",
        f"-I{proto_root}",
        f"-I{include}",
        f"--python_out={output_root}",
        f"--pyi_out={output_root}",
        f"--grpc_python_out={output_root}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))
    package_dir = output_root / "shop" / "v1"
    (package_dir / "__init__.py").write_text('"""Generated protobuf and gRPC code."""\n')
    return sorted(p for p in package_dir.iterdir() if p.suffix in {".py", ".pyi"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=OUTPUT_ROOT, help="output root")
    args = parser.parse_args(argv)
    written = generate(args.out)
    print(f"generated {len(written)} files in {args.out / 'shop' / 'v1'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
