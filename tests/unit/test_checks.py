from __future__ import annotations

import asyncio

import pytest

from prm_plugins import InvalidInputError, load_prm
from prm_plugins.checks import HybridPRM, check_arithmetic

from support.graph_models import make_model_dir


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
        ("I can eat only 60g * 4/5 = 240g/5 = 48 grams", "ok"),
        ("This left 18 pink - 6 = 12 pink flamingos.", "ok"),
        ("Janeth will pay an additional $2000x 10/100 =$200.", "ok"),
        ("The oven is off by 4% because 18 / 450 x 100 = 4%", "ok"),
        ("Emma has 120 – 80 - 15 = 25 more points than Ava.", "ok"),
        ("It takes 200 GB / 2 GB/minute = 100 minutes", "ok"),
        ("It takes 200 GB / 2 GB/minute = 90 minutes", "wrong"),
        ("a profit of 200 hours * $50/hour = $10002 a day", "wrong"),
        ("Artie sells 9 petunias x $2 = $28", "wrong"),
        ("He removes 7.5 / .5 = 5 toys", "wrong"),
        ("I have 3 apples and 4 pears.", "none"),
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
    abatch = asyncio.run(hybrid.ascore_batch([("w5", steps)]))
    assert abatch[0].scores == s.scores  # the async path is capped too
    with pytest.raises(AttributeError):
        hybrid.no_such_attribute  # noqa: B018
    with pytest.raises(InvalidInputError, match="cap must be in"):
        HybridPRM(prm, cap=2.0)


def test_manifest_recommended_checks_apply_on_load(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    d = make_model_dir(tmp_path / "m")
    man = json.loads((d / "prm.json").read_text())
    man["extra"]["checks"] = ["arithmetic"]
    (d / "prm.json").write_text(json.dumps(man))
    steps = ["w1", "3 + 4 = 8", "w2"]
    with_checks = load_prm(d, device="cpu")
    raw = load_prm(d, device="cpu", checks=())
    assert with_checks.checks == ("arithmetic",) and raw.checks == ()
    s, r = with_checks.score("w5", steps), raw.score("w5", steps)
    assert s.scores[0] == r.scores[0]
    assert s.scores[1:] == [min(x, 0.05) for x in r.scores[1:]]
    assert s.meta["model_scores"] == r.scores
    with pytest.raises(InvalidInputError, match="unknown step check"):
        load_prm(d, device="cpu", checks=["spelling"])


@pytest.mark.parametrize(("question", "steps", "unused"), [
    ("He sells 18 apples and gives away 7.", ["60 - 7 = 53", "The answer is 53."], ["18"]),
    ("He sells 18 apples and gives away 7.", ["60 - 18 = 42", "42 - 7 = 35"], []),
    ("A 25% tip on a $1,200 bill?", ["0.25 * 1200 = 300"], []),  # 25% written as 0.25
    ("Half of 0.5 kg?", ["50 / 2 = 25 grams"], []),  # 0.5 written x100
    ("She has 3 cats and 2.5 dogs.", ["3 cats"], ["2.5"]),
    ("No numbers here.", ["The answer is 4."], []),
])
def test_unused_quantities(question: str, steps: list[str], unused: list[str]) -> None:
    from prm_plugins.experimental.coverage import unused_quantities

    assert unused_quantities(question, steps) == unused


@pytest.mark.parametrize("name", ["unused_quantities", "states_final_answer",
                                  "apply_coverage_check"])
def test_coverage_names_at_the_old_path_warn_and_forward(name: str) -> None:
    import prm_plugins.checks as checks
    from prm_plugins.experimental import coverage

    with pytest.warns(FutureWarning, match=f"prm_plugins.checks.{name} moved to "
                                           "prm_plugins.experimental.coverage"):
        old = getattr(checks, name)
    assert old is getattr(coverage, name)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        checks.nothing_here  # noqa: B018


def test_check_registry_takes_known_names_only() -> None:
    from prm_plugins.checks import apply_arithmetic_check, register_check

    with pytest.raises(InvalidInputError, match="unknown step check 'spelling'; known checks: "
                                                "arithmetic, coverage"):
        register_check("spelling", apply_arithmetic_check)


def test_coverage_check_is_loaded_on_first_use() -> None:
    # a fresh interpreter: asking for "coverage" imports the experimental module that fills
    # the registry; nothing else imports it
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from prm_plugins.checks import apply_checks\n"
        "from prm_plugins.types import StepScores\n"
        "assert 'prm_plugins.experimental.coverage' not in sys.modules\n"
        "s = StepScores(steps=['60 - 7 = 53', 'The answer is 53.'], scores=[0.9, 0.9],\n"
        "               question='He sells 18 and gives away 7.')\n"
        "out = apply_checks(s, ['coverage'])\n"
        "assert 'prm_plugins.experimental.coverage' in sys.modules\n"
        "print(out.scores, out.meta['unused_quantities'])\n"
    )
    done = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", code],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[0.9, 0.3] ['18']"


def test_one_arithmetic_home_for_checks_and_labelling() -> None:
    import prm_plugins.arithmetic as arithmetic
    import prm_plugins.checks as checks
    import prm_plugins.labeling.gsm8k as gsm8k

    assert checks.check_arithmetic is arithmetic.check_arithmetic
    for name in ("parse_number", "parse_expression", "evaluate", "find_equations",
                 "format_number", "quantize"):
        assert getattr(gsm8k, name) is getattr(arithmetic, name), name


def test_coverage_caps_only_a_final_answer_step(tmp_path) -> None:  # type: ignore[no-untyped-def]
    prm = load_prm(make_model_dir(tmp_path / "m"), device="cpu")
    q = "w5 sells 18 and gives 7"
    raw = prm.score(q, ["60 - 7 = 53", "The answer is 53."])
    cov = HybridPRM(prm, checks=("coverage",))
    s = cov.score(q, ["60 - 7 = 53", "The answer is 53."])
    assert s.scores[0] == raw.scores[0] and s.scores[1] == min(raw.scores[1], 0.3)
    assert s.meta["unused_quantities"] == ["18"] and s.meta["model_scores"] == raw.scores
    # a partial chain (no final answer yet) is left alone: search over prefixes is unaffected
    partial = cov.score(q, ["60 - 7 = 53"])
    assert partial.scores == prm.score(q, ["60 - 7 = 53"]).scores
    # every number used: nothing capped
    full = cov.score(q, ["60 - 18 = 42", "42 - 7 = 35", "#### 35"])
    assert full.meta["unused_quantities"] == []
    assert full.scores == prm.score(q, ["60 - 18 = 42", "42 - 7 = 35", "#### 35"]).scores
    # both checks, through load_prm, in the manifest's order
    both = load_prm(make_model_dir(tmp_path / "m2"), device="cpu",
                    checks=("arithmetic", "coverage"))
    b = both.score(q, ["60 - 7 = 54", "The answer is 54."])
    assert b.meta["arithmetic"] == ["wrong", "none"] and b.meta["unused_quantities"] == ["18"]
    assert max(b.scores) <= 0.05
    with pytest.raises(InvalidInputError, match="checks must be a list"):
        HybridPRM(prm, checks=("spelling",))
