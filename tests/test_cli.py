"""cli: run in-process and assert exit code AND report rows; --help stays free of TensorFlow;
configs/default.yaml and the config dataclasses never drift apart."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pipeline.batch as batch
from conftest import FakeClassifier, form_page, write_png
from pipeline.cli import main
from pipeline.errors import ExitCode
from pipeline.state import output_lock


@pytest.fixture
def fake_model(monkeypatch, tmp_path):
    """A model file for hashing and a fake loader in place of TensorFlow; returns the loaded fakes."""
    path = tmp_path / "model.keras"
    path.write_bytes(b"fake model")
    loaded = []

    def load(model_path, batch_size):
        loaded.append(FakeClassifier())
        return loaded[-1]

    monkeypatch.setattr(batch, "_default_load_model", load)
    return path, loaded


def process(tmp_path, model, *extra) -> int:
    return main(["process", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--model", str(model),
                 "--jobs", "1", *extra])


def report_rows(tmp_path) -> dict:
    data = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    return {d["path"]: d for d in data["documents"]}


def test_all_read_exits_0_with_rows(tmp_path, fake_stages, fake_model):
    model, loaded = fake_model
    for index in range(3):
        write_png(tmp_path / "in" / f"{index}.png", form_page(index))
    assert process(tmp_path, model, "--quiet") == ExitCode.ok
    rows = report_rows(tmp_path)
    assert sorted(rows) == ["0.png", "1.png", "2.png"]
    assert [rows[p]["pages"][0]["fields"][0]["text"] for p in sorted(rows)] == ["0451"] * 3
    assert len(loaded) == 1
    header = json.loads((tmp_path / "out" / "report.json").read_text())["run"]
    assert header["model"]["path"] == str(model.resolve())
    assert header["config"]["run"]["workers"] == 1  # --jobs reached the config


def test_some_documents_failed_exits_2_and_lists_them(tmp_path, fake_stages, fake_model, caplog):
    model, _ = fake_model
    write_png(tmp_path / "in" / "good.png", form_page(0))
    (tmp_path / "in" / "bad.png").write_text("not an image")
    assert process(tmp_path, model) == ExitCode.some_documents_failed
    rows = report_rows(tmp_path)
    assert rows["bad.png"]["status"] == "error" and rows["bad.png"]["error"] == "unsupported_type"
    assert rows["good.png"]["status"] == "ok"
    assert "1 failed" in caplog.text  # the one-line summary


def test_rerun_reuses_and_force_rereads(tmp_path, fake_stages, fake_model):
    model, loaded = fake_model
    write_png(tmp_path / "in" / "a.png", form_page(0))
    assert process(tmp_path, model, "-q") == ExitCode.ok
    assert process(tmp_path, model, "-q") == ExitCode.ok
    assert len(loaded) == 1  # nothing new: no model load on the second run
    counts = json.loads((tmp_path / "out" / "report.json").read_text())["run"]["counts"]
    assert (counts["reused"], counts["read"]) == (1, 0)
    assert process(tmp_path, model, "-q", "--force") == ExitCode.ok
    counts = json.loads((tmp_path / "out" / "report.json").read_text())["run"]["counts"]
    assert (counts["reused"], counts["read"]) == (0, 1)


@pytest.mark.parametrize("case", ["no_input", "missing_model", "bad_config", "unknown_flag", "no_argument",
                                  "negative_jobs"])
def test_could_not_run_exits_1_and_says_why(tmp_path, fake_model, capsys, case):
    model, _ = fake_model
    write_png(tmp_path / "in" / "a.png", form_page(0))
    if case == "no_input":
        code = main(["process", str(tmp_path / "missing"), "--model", str(model), "-o", str(tmp_path / "out")])
        expected = "does not exist"
    elif case == "missing_model":
        code = process(tmp_path, tmp_path / "nope.keras")
        expected = "make train"
    elif case == "bad_config":
        bad = tmp_path / "bad.yaml"
        bad.write_text("run:\n  wokers: 2\n")
        code = process(tmp_path, model, "--config", str(bad))
        expected = "wokers"
    elif case == "unknown_flag":
        code = process(tmp_path, model, "--colour")
        expected = "--colour"
    elif case == "negative_jobs":
        code = main(["process", str(tmp_path / "in"), "--model", str(model), "--jobs", "-1"])
        expected = "--jobs"
    else:
        code = main(["process"])
        expected = "Missing argument"
    assert code == ExitCode.could_not_run
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "out" / "report.json").exists()


def test_progress_bar_only_on_a_terminal_and_never_when_quiet(tmp_path, fake_stages, fake_model, capsys,
                                                              monkeypatch):
    from pipeline import cli

    model, _ = fake_model
    write_png(tmp_path / "in" / "a.png", form_page(0))
    assert process(tmp_path, model) == ExitCode.ok  # stderr is captured, not a TTY: no bar
    captured = capsys.readouterr()
    assert "doc/s" not in captured.err and "doc/s" not in captured.out
    monkeypatch.setattr(cli.sys.stderr, "isatty", lambda: True, raising=False)
    assert cli._show_progress(quiet=False) is True
    assert cli._show_progress(quiet=True) is False


def test_second_run_exits_75(tmp_path, fake_stages, fake_model, capsys):
    model, _ = fake_model
    write_png(tmp_path / "in" / "a.png", form_page(0))
    (tmp_path / "out").mkdir()
    with output_lock(tmp_path / "out"):
        assert process(tmp_path, model) == ExitCode.already_running
    assert "try again" in capsys.readouterr().err
    assert process(tmp_path, model, "-q") == ExitCode.ok


def test_interrupt_exits_130(tmp_path, fake_model, monkeypatch):
    model, _ = fake_model

    def interrupted(gray, config, dpi=None, bilevel=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "segment_page", interrupted)
    write_png(tmp_path / "in" / "a.png", form_page(0))
    assert process(tmp_path, model, "-q") == ExitCode.interrupted


def test_sigterm_exits_130_and_keeps_the_previous_report(tmp_path, fake_stages, fake_model, monkeypatch):
    import os
    import signal

    model, _ = fake_model
    write_png(tmp_path / "in" / "a.png", form_page(0))
    assert process(tmp_path, model, "-q") == ExitCode.ok
    before = (tmp_path / "out" / "report.json").read_bytes()
    previous = signal.getsignal(signal.SIGTERM)

    def terminated(gray, config, dpi=None, bilevel=False):
        os.kill(os.getpid(), signal.SIGTERM)  # as `timeout` would send it
        raise AssertionError("SIGTERM did not interrupt")

    monkeypatch.setattr(batch, "segment_page", terminated)
    assert process(tmp_path, model, "-q", "--force") == ExitCode.interrupted
    assert (tmp_path / "out" / "report.json").read_bytes() == before
    assert signal.getsignal(signal.SIGTERM) == previous  # the handler is the CLI's only while it runs


def test_verbose_shows_internal_tracebacks(tmp_path, fake_model, monkeypatch, caplog):
    model, _ = fake_model

    def buggy(gray, config, dpi=None, bilevel=False):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(batch, "segment_page", buggy)
    write_png(tmp_path / "in" / "a.png", form_page(0))
    assert process(tmp_path, model, "--verbose") == ExitCode.some_documents_failed
    assert "Traceback" in caplog.text and "ZeroDivisionError" in caplog.text
    assert report_rows(tmp_path)["a.png"]["error"] == "internal"
    with pytest.raises(ZeroDivisionError):
        process(tmp_path, model, "--raise-on-error", "--force")


def test_help_answers_without_tensorflow():
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "process", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--output" in done.stdout and "--force" in done.stdout
    probe = textwrap.dedent("""
        import sys
        import pipeline.cli
        from pipeline.cli import main
        code = main(["--help"])
        heavy = [m for m in ("tensorflow", "keras", "pandas") if m in sys.modules]
        print("HEAVY", heavy, "CODE", code)
    """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "HEAVY [] CODE 0" in done.stdout


def test_console_script_help():
    script = Path(sys.executable).parent / "digits"
    if not script.exists():
        pytest.skip("the digits console script is not installed in this environment")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "process" in done.stdout


# --- config drift: configs/default.yaml mirrors the dataclasses one to one -------------

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "models" / "digits.keras"
SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@pytest.mark.skipif(not SHIPPED_MODEL.exists(), reason="no shipped model at models/digits.keras; run `make train`")
@pytest.mark.skipif(not any(SAMPLES.glob("*.png")) and not any(SAMPLES.glob("*.jpg")),
                    reason="no sample pages in samples/; run `make samples`")
def test_end_to_end_with_the_shipped_model(tmp_path):
    """The real program on samples/: TensorFlow, real stages, a subprocess like cron's."""
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "process", str(SAMPLES), "--output",
                           str(tmp_path / "out"), "--quiet"], capture_output=True, text=True, timeout=600)
    assert done.returncode == ExitCode.ok, done.stderr
    assert "oneDNN" not in done.stderr, "TensorFlow's start-up chatter would reach cron's mail"
    data = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert data["run"]["model"]["sha256"] and data["run"]["counts"]["fields"] > 0
    assert all(d["status"] == "ok" for d in data["documents"])


@pytest.mark.skipif(not SHIPPED_MODEL.exists(), reason="no shipped model at models/digits.keras; run `make train`")
def test_samples_then_eval_scores_the_generated_pages(tmp_path, tiny_mnist):
    pages = tmp_path / "pages"
    assert main(["samples", "--mnist", str(tiny_mnist), "--output", str(pages), "--pages", "2"]) == ExitCode.ok
    assert len(list(pages.glob("*.json"))) == 2
    report = tmp_path / "eval.md"
    code = main(["eval", "--mnist", str(tiny_mnist), "--real", str(tmp_path / "absent"), "--pages", str(pages),
                 "--report", str(report), "--quiet"])
    assert code == ExitCode.ok
    text = report.read_text(encoding="utf-8")
    assert "| MNIST test (20) |" in text and "| Pages | 2 |" in text
    assert "### Review flags by threshold" in text and "Cheque amounts" not in text
