from __future__ import annotations

import pytest
from graph_models import make_model_dir

from prm_plugins import InvalidInputError, load_prm
from prm_plugins.checks import HybridPRM, check_arithmetic


@pytest.mark.parametrize(
    ("step", "verdict"),
    [
        ("Natalia sold 48/2 = 24 clips in May.", "ok"),
        ("Natalia sold 48+24 = 72 clips altogether.", "ok"),
        ("The total cost was 500+800=$1300", "ok"),
        ("It is 1,200 - 200 = 1,000.", "ok"),
        ("Weng earns 12/60 = $0.2 per minute.", "ok"),
        ("Working 50 minutes, she earned 0.2 x 50 = $10.", "ok"),
        ("(3+4)*2 = 14", "ok"),
        ("-3 + 5 = 2", "ok"),
        ("so 5 - 8 = -3", "ok"),
        ("10/3 = 3.33 each", "ok"),
        ("7/2 = 3 full boxes", "ok"),
        ("2 + 2 = 4 + 1 = 5", "ok"),
        ("She earns 12 * 5 = $65 a week.", "wrong"),
        ("He has 3 - 1 = 2 left and 2 x 4 = 9", "wrong"),
        ("10/3 = 3.5", "wrong"),
        ("The answer is 72.", "none"),
        ("x = 5", "none"),
        ("Divide by 0: 5/0 = 3", "none"),
    ],
)
def test_check_arithmetic(step: str, verdict: str) -> None:
    assert check_arithmetic(step)[0] == verdict


def test_check_reports_the_failing_equation() -> None:
    verdict, checks = check_arithmetic("First 3 + 4 = 7, then 7 * 2 = 15.")
    assert verdict == "wrong"
    assert [c.holds for c in checks] == [True, False]
    assert checks[1].text == "7 * 2 = 15" and checks[1].lhs_value == 14


def test_hybrid_caps_wrong_step_and_later_steps(tmp_path) -> None:  # type: ignore[no-untyped-def]
    prm = load_prm(make_model_dir(tmp_path / "m"), device="cpu")
    steps = ["w1 w2", "3 + 4 = 8", "w3"]
    raw = prm.score("w5", steps)
    hybrid = HybridPRM(prm, cap=0.01)
    s = hybrid.score("w5", steps)
    assert s.scores[0] == raw.scores[0]
    assert s.scores[1] == min(raw.scores[1], 0.01) and s.scores[2] == min(raw.scores[2], 0.01)
    assert s.meta["arithmetic"] == ["none", "wrong", "none"]
    assert s.meta["model_scores"] == raw.scores
    no_prop = HybridPRM(prm, cap=0.01, propagate=False).score("w5", steps)
    assert no_prop.scores[2] == raw.scores[2]
    batch = hybrid.score_batch([("w5", steps), ("w5", ["3 + 4 = 7"])])
    assert batch[0].scores == s.scores and batch[1].meta["arithmetic"] == ["ok"]
    assert hybrid.provider == "CPUExecutionProvider"  # attributes pass through
    with pytest.raises(InvalidInputError, match="cap must be in"):
        HybridPRM(prm, cap=2.0)
