"""The package's public surface: what ``__all__`` promises is there, and only that."""

from __future__ import annotations

import imagetwin_async
import imagetwin_async.emulator


def test_all_is_sorted_complete_and_importable() -> None:
    names = imagetwin_async.__all__
    assert len(set(names)) == len(names)  # ruff's RUF022 keeps it sorted
    for name in names:
        assert hasattr(imagetwin_async, name), name
    public = {
        n
        for n in vars(imagetwin_async)
        if n.isidentifier() and not n.startswith("_") and n != "annotations"
    }
    # Every public name is either exported or a submodule.
    modules = {"emulator", "cli", "fastapi", "redis", "fleet"}
    assert public - set(names) <= modules


def test_the_contract_names_exist() -> None:
    for name in [
        "ImagetwinClient",
        "RateLimit",
        "ScanResult",
        "ScanOutcome",
        "ImagetwinError",
        "InvalidUpload",
        "AuthenticationError",
        "BadRequest",
        "ScanNotFound",
        "RateLimited",
        "ScanFailed",
        "ServerError",
        "ServiceUnavailable",
        "PollTimeout",
    ]:
        assert name in imagetwin_async.__all__


def test_errors_subclass_the_fitting_builtins() -> None:
    assert issubclass(imagetwin_async.InvalidUpload, ValueError)
    assert issubclass(imagetwin_async.PollTimeout, TimeoutError)
    for name in imagetwin_async.__all__:
        obj = getattr(imagetwin_async, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, imagetwin_async.ImagetwinError), name


def test_the_api_key_is_never_in_a_repr() -> None:
    client = imagetwin_async.ImagetwinClient("sk-secret-value", base_url="http://127.0.0.1:1/v1")
    assert "sk-secret-value" not in repr(client)
    assert "sk-secret-value" not in repr(vars(client))
    assert "sk-secret-value" not in repr(vars(client._transport))


def test_emulator_exports_are_sorted() -> None:
    names = imagetwin_async.emulator.__all__
    assert all(hasattr(imagetwin_async.emulator, n) for n in names)


def test_the_batch_keywords_are_listed_once_and_match_their_defaults() -> None:
    # submit_and_wait / iter_outcomes take **BatchKwargs; BatchOptions holds the defaults.
    import inspect  # noqa: PLC0415

    import attrs  # noqa: PLC0415

    from imagetwin_async._batch import BatchKwargs, BatchOptions  # noqa: PLC0415

    fields = {f.name for f in attrs.fields(BatchOptions)}
    assert BatchKwargs.__optional_keys__ == fields and not BatchKwargs.__required_keys__
    client = imagetwin_async.ImagetwinClient
    for method in (client.submit_and_wait, client.iter_outcomes):
        assert list(inspect.signature(method).parameters) == ["self", "batch", "options"]
    # The signature is **options: the docstring is where a reader finds each keyword.
    for name in fields:
        assert f"{name}=" in (client.submit_and_wait.__doc__ or ""), name


def test_the_drawn_error_trees_name_every_error() -> None:
    # The trees in _errors' docstring and the README are what a user reads to catch errors.
    from pathlib import Path  # noqa: PLC0415

    import imagetwin_async._errors  # noqa: PLC0415
    import imagetwin_async.redis  # noqa: PLC0415 - defines RedisLimiterError

    def subclasses(cls: type) -> set[type]:
        found = set(cls.__subclasses__())
        return found.union(*(subclasses(c) for c in found))

    ours = {
        c.__name__
        for c in subclasses(imagetwin_async.ImagetwinError)
        if c.__module__.startswith("imagetwin_async.")
        and not c.__module__.startswith("imagetwin_async.cli")
    }
    assert {"JournalError", "JournalLocked", "RedisLimiterError"} <= ours
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for name in ours:
        assert name in (imagetwin_async._errors.__doc__ or ""), name
        assert f"── {name}" in readme or f" {name} " in readme, name
