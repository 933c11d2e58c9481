"""The shared corpus in tests/testdata: every case must get the same answer in Python as in
Rust (core/tests/classify_corpus.rs, decide_corpus.rs, mask_corpus.rs run the same files)."""

from __future__ import annotations

import functools
import gzip
import json
import random

import pytest

import kubeleash
from conftest import REPO, TESTDATA

ATTRIBUTE_FIELDS = ["resourceRequest", "verb", "apiGroup", "apiVersion", "namespace", "resource", "subresource", "name", "path"]


def load(name: str) -> list[dict]:
    return json.loads((TESTDATA / name).read_text())


CLASSIFY = load("classify.json")
DECIDE = load("decide.json")
MASK_DIR = TESTDATA / "mask"
MASK = json.loads((MASK_DIR / "cases.json").read_text()) if (MASK_DIR / "cases.json").exists() else []


@functools.lru_cache(maxsize=None)
def policy(path: str) -> kubeleash.Policy:
    return kubeleash.Policy.from_file(path)


ANY_POLICY = kubeleash.Policy.from_yaml("apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nspec: {rules: []}\n")


def test_corpora_are_all_there():
    assert len(CLASSIFY) >= 60 and len(DECIDE) >= 50
    ids = [c["id"] for c in CLASSIFY]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CLASSIFY, ids=[c["id"] for c in CLASSIFY])
def test_classify(case):
    headers = [tuple(h) for h in case.get("headers", [])]
    d = ANY_POLICY.evaluate(case["method"], case["target"], headers=headers)
    expect = case["expect"]
    if "refused" in expect:
        assert d.request is None and d.effect == "deny" and d.rule is None
        # The refusal's code: the masker classifies the same way and says which.
        with pytest.raises(kubeleash.RequestError) as e:
            ANY_POLICY.masker(case["method"], case["target"], headers=headers)
        assert e.value.code == expect["refused"]
    else:
        assert d.request is not None, d.reason
        assert {f: d.request[f] for f in ATTRIBUTE_FIELDS} == expect
        assert sorted(d.request) == sorted(ATTRIBUTE_FIELDS)


@pytest.mark.parametrize("case", DECIDE, ids=[c["id"] for c in DECIDE])
def test_decide(case):
    p = policy(str(TESTDATA / "policies" / case["policy"]))
    d = p.evaluate(
        case["method"],
        case["target"],
        user=case.get("user") or None,
        groups=case.get("groups", []),
        headers=[tuple(h) for h in case.get("headers", [])],
        body=(TESTDATA / case["bodyFile"]).read_bytes() if "bodyFile" in case else case.get("body"),
    )
    expect = case["expect"]
    assert (d.effect, d.rule) == (expect["effect"], expect.get("rule")), d.reason
    if expect.get("reasonContains"):
        assert expect["reasonContains"] in d.reason
    assert d.allowed == (d.effect == "allow")


def test_example_policy_tests_pass():
    report = policy(str(REPO / "examples" / "agents.yaml")).test()
    assert len(report) >= 10 and report.passed, report.failures


class MaskCase:
    def __init__(self, case: dict):
        self.case = case
        self.policy = policy(str(MASK_DIR / "policies" / case["policy"]))
        self.headers = [tuple(h) for h in case.get("headers", [])]
        self.plain = (MASK_DIR / case["input"]).read_bytes()
        self.body = gzip.compress(self.plain) if case.get("contentEncoding") == "gzip" else self.plain
        self.expected = (MASK_DIR / case["expected"]).read_bytes()

    def run(self, pieces) -> tuple[bytes, str | None]:
        """Everything delivered (up to a refusal) and the refusal's code."""
        c = self.case
        try:
            m = self.policy.masker(
                c["method"],
                c["target"],
                headers=self.headers,
                content_type=c["contentType"],
                content_encoding=c.get("contentEncoding"),
            )
        except kubeleash.MaskError as e:
            return e.safe, e.code
        out = bytearray()
        try:
            for p in pieces:
                out += m.feed(p)
            out += m.finish()
        except kubeleash.MaskError as e:
            out += e.safe
            return bytes(out), e.code
        return bytes(out), None


MASK_CASES = [MaskCase(c) for c in MASK]


def test_mask_corpus_is_there():
    assert len(MASK_CASES) >= 60, "tests/testdata/mask/cases.json is missing or shrank"


@pytest.mark.parametrize("m", MASK_CASES, ids=[m.case["id"] for m in MASK_CASES])
def test_mask(m):
    if m.case.get("knownBug"):
        pytest.xfail(m.case["knownBug"])
    out, code = m.run([m.body])
    assert code == m.case.get("expectedError")
    assert out == m.expected
    # policy.mask is the same masker in one call; it returns nothing on a refusal.
    c = m.case
    try:
        whole = m.policy.mask(c["method"], c["target"], m.body, headers=m.headers, content_type=c["contentType"], content_encoding=c.get("contentEncoding"))
        assert code is None and whole == out
    except kubeleash.MaskError as e:
        assert e.code == code and e.safe == b""
    for secret in c["secrets"]:
        assert secret.encode() not in out


def splits(body: bytes, rng: random.Random):
    yield from ([body[i : i + n] for i in range(0, len(body), n)] for n in (1, 2, 3, 7, 64, 4096) if n > 1 or len(body) <= 64 * 1024)
    for _ in range(4):
        pieces, at = [], 0
        top = rng.choice([2, 16, 300, 5000])
        while at < len(body):
            n = 1 + rng.randrange(top)
            pieces.append(body[at : at + n])
            at += n
        yield pieces
    yield [p for i in range(0, len(body), 3) for p in (body[i : i + 3], b"")]


@pytest.mark.parametrize("m", MASK_CASES, ids=[m.case["id"] for m in MASK_CASES])
def test_mask_does_not_depend_on_chunking(m):
    whole = m.run([m.body])
    rng = random.Random(m.case["id"])
    for pieces in splits(m.body, rng):
        assert m.run(pieces) == whole, f"fed in {len(pieces)} pieces"
