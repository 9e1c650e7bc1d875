"""Page counts of PDFs whose page tree is honest, lying, cyclic or absurdly deep.

Adversary: a manuscript crafted (or mangled by a broken producer) so that its declared page
count and its page tree disagree, or so that walking its tree never ends. The count must be
the one PDF viewers show (the declared ``/Count``) where it can be believed, a walk of the tree
where it cannot, and a typed ``InvalidUpload`` (never a hang) where neither works.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagetwin_async import FileContent, InvalidUpload
from imagetwin_async._pagecount import count_pdf_pages
from imagetwin_async._uploads import prepare_upload

from ._files import pdf_bytes


def build_pdf(objects: list[bytes]) -> bytes:
    """A PDF of ``objects`` (object 1 is the catalog), with a correct xref table."""
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    )
    return out.getvalue()


def refs(numbers: range | list[int]) -> bytes:
    return b" ".join(b"%d 0 R" % n for n in numbers)


def flat(count: bytes | None, kids: int) -> bytes:
    """A root page node declaring ``count`` (None: no /Count) over ``kids`` leaf pages."""
    declared = b"" if count is None else b"/Count " + count
    return build_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages %s /Kids [%s] >>" % (declared, refs(range(3, 3 + kids))),
            *[b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 72 72] >>"] * kids,
        ]
    )


def nested_lie(root_count: int, inner: int, leaves_each: int) -> bytes:
    """A root declaring ``root_count`` over ``inner`` honest intermediate nodes."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Count %d /Kids [%s] >>" % (root_count, refs(range(3, 3 + inner))),
    ]
    first_leaf = 3 + inner
    for i in range(inner):
        start = first_leaf + i * leaves_each
        kids = refs(range(start, start + leaves_each))
        objects.append(b"<< /Type /Pages /Count %d /Kids [%s] >>" % (leaves_each, kids))
    objects += [b"<< /Type /Page /MediaBox [0 0 72 72] >>"] * (inner * leaves_each)
    return build_pdf(objects)


def cyclic(count: bytes | None) -> bytes:
    declared = b"" if count is None else b"/Count " + count
    return build_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages %s /Kids [3 0 R 2 0 R] >>" % declared,
            b"<< /Type /Page /Parent 2 0 R >>",
        ]
    )


def deep(levels: int, count: bytes | None) -> bytes:
    declared = b"" if count is None else b"/Count " + count
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    objects += [b"<< /Type /Pages %s /Kids [%d 0 R] >>" % (declared, 3 + i) for i in range(levels)]
    objects.append(b"<< /Type /Page >>")
    return build_pdf(objects)


@dataclass(frozen=True)
class Case:
    pdf: bytes
    pages: int | None  # None: refused as unreadable


CASES = {
    # What viewers show and what a walk finds agree: the declared figure, read cheaply.
    "honest": Case(flat(b"7", 7), 7),
    "pypdf's own writer": Case(pdf_bytes(12), 12),
    # More kids than declared pages: the figure is a lie, the walk decides (and refuses).
    "count 49 over 60 kids": Case(flat(b"49", 60), 60),
    # Declared above the walk: viewers show 60 pages, and so do we (then refuse it).
    "count 60 over 1 kid": Case(flat(b"60", 1), 60),
    # Not a believable whole number: walked.
    "no /Count": Case(flat(None, 5), 5),
    "negative /Count": Case(flat(b"-5", 1), 1),
    "zero /Count": Case(flat(b"0", 3), 3),
    "absurd /Count": Case(flat(b"999999999999", 1), 1),
    "fractional /Count": Case(flat(b"2.5", 1), 1),
    "/Count as a name": Case(flat(b"/Two", 2), 2),
    # A lie the root's kids cannot reveal (honest inner nodes): the declared figure stands,
    # as it does in PDF viewers; the service sees the same document.
    "nested lie": Case(nested_lie(10, 2, 30), 10),
    # Cycles and bottomless trees: a believable figure is taken without walking; without one,
    # the walk stops on pypdf's guards and the file is refused, in bounded time.
    "cyclic with /Count": Case(cyclic(b"2"), 2),
    "cyclic without /Count": Case(cyclic(None), None),
    "2000 levels deep with /Count": Case(deep(2000, b"1"), 1),
    "2000 levels deep without /Count": Case(deep(2000, None), None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_hostile_page_tree_gets_the_viewers_count_or_a_typed_refusal(name: str) -> None:
    case = CASES[name]
    began = time.monotonic()
    if case.pages is None:
        with pytest.raises(InvalidUpload, match=r"x\.pdf is not a readable PDF"):
            count_pdf_pages(io.BytesIO(case.pdf), name="x.pdf")
    else:
        assert count_pdf_pages(io.BytesIO(case.pdf), name="x.pdf") == case.pages
    assert time.monotonic() - began < 10.0  # a generous bound: a hang is what this catches


@pytest.mark.parametrize(
    ("pdf", "pages"), [(flat(b"49", 60), 60), (flat(b"60", 1), 60), (nested_lie(50, 1, 2), 50)]
)
def test_the_page_limit_holds_whichever_count_says_fifty_or_more(pdf: bytes, pages: int) -> None:
    with pytest.raises(InvalidUpload, match=f"has {pages} pages"):
        prepare_upload(FileContent("x.pdf", pdf))


# An honest tree: nested lists are intermediate nodes, ints are runs of leaf pages.
TREES = st.recursive(
    st.integers(1, 4),
    lambda inner: st.lists(inner, min_size=1, max_size=4),
    max_leaves=12,
)


def leaves(tree: int | list[object]) -> int:
    return tree if isinstance(tree, int) else sum(leaves(t) for t in tree)  # type: ignore[arg-type]


def honest_pdf(tree: int | list[object], lie: int | None) -> bytes:
    """``tree`` as a page tree with a true /Count on every node; the root's replaced by ``lie``."""
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>"]

    def node(subtree: int | list[object], root: bool) -> int:
        number = len(objects) + 1
        objects.append(b"")
        kids: list[int] = []
        if isinstance(subtree, int):
            for _ in range(subtree):
                objects.append(b"<< /Type /Page /Parent %d 0 R >>" % number)
                kids.append(len(objects))
        else:
            kids = [node(t, root=False) for t in subtree]  # type: ignore[arg-type]
        count = lie if root and lie is not None else leaves(subtree)
        objects[number - 1] = b"<< /Type /Pages /Count %d /Kids [%s] >>" % (count, refs(kids))
        return number

    node(tree, root=True)
    return build_pdf(objects)


@settings(max_examples=60, deadline=None)
@given(tree=TREES, lie=st.one_of(st.none(), st.integers(-3, 80)))
def test_any_page_tree_counts_as_declared_or_as_walked(
    tree: int | list[object], lie: int | None
) -> None:
    pdf = honest_pdf(tree, lie)
    kids = tree if isinstance(tree, int) else len(tree)
    believable = lie is not None and lie > 0 and lie >= kids
    expected = lie if believable else leaves(tree)
    assert count_pdf_pages(io.BytesIO(pdf), name="x.pdf") == expected
