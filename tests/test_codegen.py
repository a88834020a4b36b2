"""The committed protobuf code must match what ``make proto`` generates now."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def _load_generator() -> ModuleType:
    """proto/generate.py is a script beside the .proto files, not part of a distribution."""
    path = Path(__file__).resolve().parents[1] / "proto" / "generate.py"
    spec = importlib.util.spec_from_file_location("proto_generate", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


codegen = _load_generator()


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    written = codegen.generate(output_root=tmp_path)
    fresh = {p.name: p.read_bytes() for p in written}
    committed_dir = codegen.OUTPUT_ROOT / "shop" / "v1"
    committed = {
        p.name: p.read_bytes() for p in committed_dir.iterdir() if p.suffix in {".py", ".pyi"}
    }
    assert set(fresh) == set(committed), "generated file set differs: run `make proto`"
    stale = sorted(name for name in fresh if fresh[name] != committed[name])
    assert not stale, f"stale generated code in {stale}: run `make proto`"


def test_every_proto_produces_stubs() -> None:
    names = {p.stem for p in codegen.proto_files()}
    assert {"common", "gateway", "orders", "inventory", "echo"} <= names
    committed_dir = codegen.OUTPUT_ROOT / "shop" / "v1"
    for name in names:
        assert (committed_dir / f"{name}_pb2.py").exists()
        assert (committed_dir / f"{name}_pb2_grpc.py").exists()
