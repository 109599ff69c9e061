"""The command line's argument handling (the commands themselves run in CI and in the bench test)."""

import pytest

from app.cli import main
from app.eval.report import RELEVANCE_TARGETS


@pytest.mark.parametrize("flag", [["--check-relevance"], ["--check-relevance", "all"]])
def test_check_relevance_all_checks_every_target(flag: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake_evaluate(*args: object, relevance_checks: list[str] | None = None, **kwargs: object) -> list[str]:
        seen["checks"] = relevance_checks
        return []

    monkeypatch.setattr("app.eval.report.evaluate_dataset", fake_evaluate)
    assert main(["evaluate", "--dataset", "x", "--data-dir", "y", *flag]) == 0
    assert seen["checks"] == list(RELEVANCE_TARGETS)


def test_check_relevance_rejects_unknown_targets(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--dataset", "x", "--check-relevance", "pr_auc_ratio,kept"])
    assert exit_info.value.code == 2
    assert "unknown relevance targets ['kept']" in capsys.readouterr().err
