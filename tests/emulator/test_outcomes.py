"""Content-derived results and scripted outcomes, without a server."""

from __future__ import annotations

import hashlib
import math
import random

import pytest

from imagetwin_async.emulator import FixedTime, LogNormalTime, Outcome, UploadedFile
from imagetwin_async.emulator._outcomes import Scripts, derive_findings


def files(*contents: bytes) -> list[UploadedFile]:
    return [
        UploadedFile(f"f{i}.png", len(c), hashlib.sha256(c).hexdigest())
        for i, c in enumerate(contents)
    ]


def test_findings_are_a_function_of_content_and_min_score() -> None:
    a = files(b"alpha", b"beta")
    assert derive_findings(a, 0.33, False) == derive_findings(files(b"alpha", b"beta"), 0.33, False)
    results = {derive_findings(files(bytes([i])), 0.0, False) for i in range(64)}
    assert len(results) > 10  # different content, different numbers


@pytest.mark.parametrize("seed", range(40))
def test_raising_min_score_never_adds_findings(seed: int) -> None:
    upload = files(seed.to_bytes(2, "big"))
    previous = None
    for min_score in (0.0, 0.2, 0.33, 0.5, 0.7, 0.9):
        f = derive_findings(upload, min_score, False)
        total = f.alteration_count + f.local_duplicate_count + f.extern_duplicate_count
        total += f.ai_image_count
        assert (f.highest_score == 0.0) == (total == 0)
        assert f.highest_score == 0.0 or f.highest_score >= min_score
        if previous is not None:
            assert total <= previous
        previous = total


def test_exclude_identical_paper_only_removes_external_duplicates() -> None:
    changed = 0
    for i in range(200):
        upload = files(i.to_bytes(2, "big"))
        full, trimmed = derive_findings(upload, 0.0, False), derive_findings(upload, 0.0, True)
        assert trimmed.extern_duplicate_count <= full.extern_duplicate_count
        assert trimmed.local_duplicate_count == full.local_duplicate_count
        changed += trimmed != full
    assert changed > 0


def test_outcome_constructors() -> None:
    assert Outcome.finished().findings is not None
    assert Outcome.finished().findings.highest_score == 0.0  # type: ignore[union-attr]
    assert Outcome.finished(ai_image_count=1).findings.highest_score == 0.9  # type: ignore[union-attr]
    assert Outcome.failed(processing_time=3).processing_time == 3
    assert Outcome.never().processing_time == math.inf


def test_processing_time_distributions() -> None:
    rng = random.Random(1)
    assert FixedTime(5.0).draw(rng) == 5.0
    draws = sorted(LogNormalTime(median=60.0, sigma=0.5).draw(rng) for _ in range(2001))
    assert 50 < draws[1000] < 70
    again = random.Random(1)
    FixedTime(5.0).draw(again)
    assert LogNormalTime(60.0, 0.5).draw(again) == LogNormalTime(60.0, 0.5).draw(random.Random(1))


def test_matched_scripts_win_over_the_queue_and_persist() -> None:
    scripts = Scripts()
    fail, never = Outcome.failed(), Outcome.never()
    scripts.add(never)  # next scan
    scripts.add(fail, file_name="bad.png")  # every scan with bad.png
    bad = [UploadedFile("bad.png", 1, "0" * 64)]
    good = [UploadedFile("good.png", 1, "1" * 64)]
    assert scripts.take(bad) is fail
    assert scripts.take(bad) is fail
    assert scripts.take(good) is never
    assert scripts.take(good) is None


def test_scripts_by_hash_and_times() -> None:
    scripts = Scripts()
    outcome = Outcome.finished(local_duplicate_count=3)
    scripts.add(outcome, sha256="AB" * 32, times=1)
    upload = [UploadedFile("x.png", 1, "ab" * 32)]
    assert scripts.take(upload) is outcome
    assert scripts.take(upload) is None
    scripts.add(outcome, times=2)
    assert [scripts.take(upload), scripts.take(upload), scripts.take(upload)] == [
        outcome,
        outcome,
        None,
    ]
    with pytest.raises(ValueError, match="times"):
        scripts.add(outcome, times=0)


def test_processing_times_can_grow_with_pages_and_bytes() -> None:
    # For measuring a poller that predicts durations from what it uploads.
    timing = LogNormalTime(median=20.0, sigma=0.3, page_exponent=1.0, size_exponent=0.5)

    def median_for(files: list[UploadedFile]) -> float:
        rng = random.Random(4)
        return sorted(timing.draw(rng, files) for _ in range(1001))[500]

    mib = 2**20
    one_page = median_for([UploadedFile("a.pdf", mib, "0" * 64, pages=1)])
    ten_pages = median_for([UploadedFile("b.pdf", mib, "1" * 64, pages=10)])
    four_mib = median_for([UploadedFile("c.pdf", 4 * mib, "2" * 64, pages=1)])
    three_images = median_for([UploadedFile(f"f{i}.png", mib // 3, "3" * 64) for i in range(3)])
    assert one_page == pytest.approx(20.0, rel=0.05)
    assert ten_pages == pytest.approx(200.0, rel=0.05)
    assert four_mib == pytest.approx(40.0, rel=0.05)
    assert three_images == pytest.approx(60.0, rel=0.05)
    # Without exponents the files make no difference, as before.
    plain = LogNormalTime(20.0, 0.3)
    assert plain.draw(random.Random(1), [UploadedFile("b.pdf", mib, "1" * 64, pages=10)]) == (
        plain.draw(random.Random(1))
    )
