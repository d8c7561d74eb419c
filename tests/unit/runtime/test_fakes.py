"""FakeEncoder: the stand-in detectors are unit-tested against."""

from __future__ import annotations

import numpy as np
import pytest

from safepath.runtime import Encoder, FakeEncoder


def lengths(texts):
    return {"probs": np.array([[len(t) / 100] for t in texts], dtype=np.float32)}


def test_fake_returns_what_its_function_returns_and_records_batches():
    fake = FakeEncoder(lengths, version="v7")
    out = fake.run(["ab", "abcd"])
    np.testing.assert_allclose(out["probs"], [[0.02], [0.04]])
    assert fake.calls == [["ab", "abcd"]]
    assert fake.version == "v7"


def test_fake_satisfies_the_encoder_protocol_and_warms_up():
    fake = FakeEncoder(lengths)
    assert isinstance(fake, Encoder)
    fake.warmup()
    assert fake.warmed_up


def test_fake_rejects_a_function_that_breaks_one_row_per_text():
    fake = FakeEncoder(lambda texts: {"probs": np.zeros((1, 1))})
    with pytest.raises(ValueError, match="1 rows for 2 texts"):
        fake.run(["a", "b"])
