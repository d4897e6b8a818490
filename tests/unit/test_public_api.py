import asyncq


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in dir(asyncq) if not name.startswith("_")}
    modules = {"testing", "cli"}  # submodules, imported on their own
    assert set(asyncq.__all__) - {"__version__"} == public - modules
    for name in asyncq.__all__:
        assert hasattr(asyncq, name), name


def test_the_package_ships_its_types() -> None:
    from importlib.resources import files

    assert files("asyncq").joinpath("py.typed").is_file()
