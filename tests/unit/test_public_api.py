import subprocess
import sys

import asyncq


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in dir(asyncq) if not name.startswith("_")}
    modules = {"testing", "cli", "contrib"}  # submodules, imported on their own
    assert set(asyncq.__all__) - {"__version__"} == public - modules
    for name in asyncq.__all__:
        assert hasattr(asyncq, name), name


def test_the_package_ships_its_types() -> None:
    from importlib.resources import files

    assert files("asyncq").joinpath("py.typed").is_file()


def test_importing_asyncq_loads_anyios_asyncio_backend() -> None:
    # Otherwise anyio imports it lazily, inside the first `async with queue` of the
    # process (some 20 ms of a worker's start).
    code = "import sys, asyncq; print('anyio._backends._asyncio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
