"""`rnnexp report` on synthetic sweep folders (no training)."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import pytest
from conftest import run_cli

from rnnexp.errors import RnnexpError
from rnnexp.report import aggregate, load, render

CELLS = ("lstm", "gru")
LAGS = (100, 20)
SEEDS = (0, 1, 2)


def nrmse(cell: str, lag: int, seed: int) -> float:
    return {"lstm": 0.1, "gru": 0.2}[cell] + lag / 1000 + 0.01 * seed


def solved(cell: str, lag: int, seed: int) -> float:
    """lstm solves every seed; gru solves lag 20 with seeds 0 and 1, never lag 100."""
    return float(cell == "lstm" or (lag == 20 and seed < 2))


def write_job(sweep: Path, name: int | str, overrides: list[str], metrics: dict | None) -> None:
    job = sweep / str(name)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps({**metrics, "overrides": overrides}))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """2 cells x 2 lags x 3 seeds, completed; then job 12 failed, job 13 without metrics."""
    folder = tmp_path / "outputs" / "multirun" / "2026-01-01_00-00-00-000000"
    folder.mkdir(parents=True)
    (folder / "multirun.yaml").write_text("hydra: {}\n")
    name = 0
    for cell in CELLS:
        for lag in LAGS:
            for seed in SEEDS:
                final = {
                    "loss": 1.0,
                    "nrmse": nrmse(cell, lag, seed),
                    "solved": solved(cell, lag, seed),
                }
                metrics = {"status": "completed", "final": final, "best": {"metric": "nrmse"}}
                overrides = [f"cell={cell}", f"task.lag={lag}", f"train.seed={seed}"]
                write_job(folder, name, [*overrides, "train.max_steps=500"], metrics)
                name += 1
    failed = {"status": "failed", "error": "loss is NaN at step 7 [try clip=norm]"}
    write_job(
        folder, 12, ["cell=gru", "task.lag=100", "train.seed=3", "train.max_steps=500"], failed
    )
    write_job(folder, 13, ["cell=gru", "task.lag=20", "train.seed=3", "train.max_steps=500"], None)
    return folder


def test_groups_drop_the_seed_and_aggregate_over_it(sweep: Path) -> None:
    jobs = load.load_sweep(sweep)
    assert [job.name for job in jobs] == [str(i) for i in range(14)]
    assert [job.state for job in jobs[12:]] == ["failed", "missing"]
    assert aggregate.split_keys(jobs) == (
        ["cell", "task.lag", "train.seed"],
        {"train.max_steps": "500"},
    )

    report = aggregate.build_report(sweep)
    assert report.group_keys == ["cell", "task.lag"]
    assert report.metric_names == ["loss", "nrmse"] and report.has_solved
    by_key = {s.key: s for s in report.summaries}
    assert list(by_key) == [("gru", "20"), ("gru", "100"), ("lstm", "20"), ("lstm", "100")]
    for (cell, lag), summary in by_key.items():
        values = [nrmse(cell, int(lag), seed) for seed in SEEDS]
        stat = summary.metrics["nrmse"]
        assert stat.n == 3 and stat.mean == pytest.approx(statistics.mean(values))
        assert stat.std == pytest.approx(statistics.stdev(values))
        assert summary.metrics["loss"].std == 0.0
    assert by_key["lstm", "100"].solved == (3, 3) and by_key["gru", "100"].solved == (0, 3)
    assert by_key["gru", "20"].value("solved") == "2/3"
    assert by_key["gru", "100"].counts == {
        "completed": 3,
        "failed": 1,
        "unfinished": 0,
        "missing": 0,
    }
    assert by_key["gru", "20"].counts["missing"] == 1 and len(by_key["gru", "20"].jobs) == 4
    assert sum(len(s.jobs) for s in report.summaries) == 14  # no job dropped

    rows = render.main_rows(report)
    assert render.main_header(report) == [
        "cell",
        "task.lag",
        "loss",
        "nrmse",
        "solved",
        "jobs",
        "failed",
        "unfinished",
        "missing",
    ]
    assert rows[1][:2] == ["gru", "100"] and rows[1][-4:] == ["4", "1", "0", "0"]
    assert rows[0][3] == str(by_key["gru", "20"].metrics["nrmse"])
    assert "±" in rows[0][3] and "constant: train.max_steps=500" in render.caption(report)
    problems = [line for _, line in render.problem_jobs(report)]
    assert problems == [
        "job 12 (cell=gru task.lag=100 train.seed=3): failed: "
        "loss is NaN at step 7 [try clip=norm]",
        "job 13 (cell=gru task.lag=20 train.seed=3): missing: no metrics.json",
    ]


def test_unfinished_and_bare_job_folders_are_counted(tmp_path: Path) -> None:
    write_job(tmp_path, 0, ["cell=gru"], {"status": "completed", "final": {"nrmse": 0.5}})
    write_job(tmp_path, 1, ["cell=gru"], {"status": "running"})
    write_job(tmp_path, 2, ["cell=gru"], {"status": "interrupted", "final": {"nrmse": 9.0}})
    (tmp_path / "3").mkdir()  # not even .hydra: the job never started
    report = aggregate.build_report(tmp_path)
    assert [job.state for job in report.jobs] == [
        "completed",
        "unfinished",
        "unfinished",
        "missing",
    ]
    assert report.swept == ["cell"]  # job 3 has no value for it
    gru, bare = report.summaries
    assert gru.key == ("gru",) and gru.counts["unfinished"] == 2 and gru.metrics["nrmse"].n == 1
    assert bare.key == (aggregate.MISSING_VALUE,) and bare.counts["missing"] == 1
    assert not report.has_solved and "solved" not in render.main_header(report)


def test_stat_survives_a_diverged_run() -> None:
    stat = aggregate.Stat.of([float("nan"), 1.0])
    assert stat is not None and math.isnan(stat.mean) and math.isnan(stat.std)
    assert aggregate.Stat.of([]) is None and str(aggregate.Stat.of([0.25])) == "0.25"


def test_parse_overrides() -> None:
    assert load.parse_overrides(["cell=gru", "+x=1", "++y=a=b", "~z"]) == {
        "cell": "gru",
        "x": "1",
        "y": "a=b",
        "~z": "",
    }
    # how a job ran is no swept key: a job continued in place keeps its row
    ran = ["task.lag=10", "train.resume=/runs/3", "train.device=cpu", "train.progress=false"]
    assert load.parse_overrides(ran) == {"task.lag": "10"}


def test_run_keys_are_those_left_out_of_job_folder_names() -> None:
    """The report's :data:`RUN_KEYS` are the keys a job folder's name leaves out
    (conf/config.yaml), less ``train.init_from``, which changes what runs."""
    import yaml

    import rnnexp.conf

    config = yaml.safe_load(Path(rnnexp.conf.__file__).with_name("config.yaml").read_text())
    excluded = set(config["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"])
    assert excluded - {"train.init_from"} == load.RUN_KEYS


def test_pivot_rows_cols_value(sweep: Path) -> None:
    jobs = load.load_sweep(sweep)
    p = aggregate.pivot(jobs, ["cell"], ["task.lag"])  # default value: solved
    assert p.value == "solved" and p.averaged_over == ["train.seed"]
    assert render.pivot_rows(p) == [
        ["cell", "task.lag=20", "task.lag=100"],
        ["gru", "2/3 (1 missing)", "0/3 (1 failed)"],
        ["lstm", "3/3", "3/3"],
    ]
    p = aggregate.pivot(jobs, ["task.lag"], [], "nrmse")
    assert p.averaged_over == ["cell", "train.seed"]
    values = [nrmse(cell, 20, seed) for cell in CELLS for seed in SEEDS]
    stat = p.cells[("20",), ()].metrics["nrmse"]
    assert stat.n == 6 and stat.mean == pytest.approx(statistics.mean(values))
    assert render.pivot_rows(p)[0] == ["task.lag", "nrmse"]
    with pytest.raises(RnnexpError, match="unknown key 'lag'.*cell, task.lag, train.seed"):
        aggregate.pivot(jobs, ["lag"], [])
    with pytest.raises(RnnexpError, match="unknown --value 'mse'.*loss, nrmse, solved"):
        aggregate.pivot(jobs, ["cell"], [], "mse")


def test_plot_draws_the_pivot(sweep: Path) -> None:
    jobs = load.load_sweep(sweep)
    p = aggregate.pivot(jobs, ["cell"], ["task.lag"])  # one line per cell against the lag
    assert render._point(p.cells[("gru",), ("20",)], p.value) == (pytest.approx(2 / 3), 0.0)
    by_lag = aggregate.pivot(jobs, ["task.lag"], [], "nrmse")  # one line along the rows
    y, bar = render._point(by_lag.cells[("20",), ()], "nrmse")
    values = [nrmse(cell, 20, seed) for cell in CELLS for seed in SEEDS]
    assert (y, bar) == (
        pytest.approx(statistics.mean(values)),
        pytest.approx(statistics.stdev(values)),
    )
    for pivot in (p, by_lag):
        path = render.plot_pivot(pivot, sweep / "pivot.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_writes_csv_and_markdown(sweep: Path) -> None:
    report = aggregate.build_report(sweep, rows=["cell"], cols=["task.lag"], value="nrmse")
    paths = render.write_report(report)
    assert [p.name for p in paths] == ["report.csv", "report.md", "report_pivot.csv"]
    with (sweep / "report.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["cell"], r["task.lag"]) for r in table] == [
        ("gru", "20"),
        ("gru", "100"),
        ("lstm", "20"),
        ("lstm", "100"),
    ]
    lstm20 = table[2]
    assert float(lstm20["nrmse_mean"]) == pytest.approx(nrmse("lstm", 20, 1))
    assert float(lstm20["nrmse_std"]) == pytest.approx(0.01)
    assert (lstm20["solved"], lstm20["solved_n"], lstm20["jobs"]) == ("3", "3", "3")
    assert (table[0]["missing"], table[1]["failed"], table[1]["completed"]) == ("1", "1", "3")
    with (sweep / "report_pivot.csv").open(newline="") as f:
        pivot = list(csv.reader(f))
    assert pivot[0] == ["cell", "task.lag=20", "task.lag=100"] and pivot[2][0] == "lstm"
    assert pivot[2][1] == str(aggregate.Stat.of([nrmse("lstm", 20, s) for s in SEEDS]))

    md = (sweep / "report.md").read_text()
    assert "| cell | task.lag | loss | nrmse | solved | jobs |" in md
    assert "## Pivot: nrmse by cell across task.lag; aggregated over train.seed" in md
    assert "- job 12 (cell=gru task.lag=100 train.seed=3): failed: loss is NaN" in md
    assert "- job 13 (cell=gru task.lag=20 train.seed=3): missing" in md

    render.write_report(aggregate.build_report(sweep))  # no pivot now: the old one would mislead
    assert not (sweep / "report_pivot.csv").exists()


def test_metrics_file_name_matches_runinfo() -> None:
    from rnnexp.train.record import METRICS_FILE

    assert load.METRICS_FILE == METRICS_FILE


def test_read_metrics_of_a_run_folder_or_file(tmp_path: Path) -> None:
    assert load.read_metrics(tmp_path) is None  # no metrics.json: None
    assert load.read_metrics(tmp_path / "metrics.json") is None
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "completed"}))
    assert load.read_metrics(tmp_path) == {"status": "completed"}
    assert load.read_metrics(tmp_path / "metrics.json") == {"status": "completed"}
    (tmp_path / "metrics.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="unreadable metrics.json: not a JSON object"):
        load.read_metrics(tmp_path)
    (tmp_path / "metrics.json").write_text("{")
    with pytest.raises(ValueError, match="unreadable metrics.json: Expecting"):
        load.read_metrics(tmp_path)
    job = load.load_job(tmp_path)  # the report keeps the job, failed, with the reason
    assert job.state == "failed" and job.error.startswith("unreadable metrics.json: ")


def test_cli_report(sweep: Path, tmp_path: Path) -> None:
    proc = run_cli("report", str(sweep), "--rows", "cell", "--cols", "task.lag", "--plot",
                   cwd=tmp_path)  # fmt: skip
    out = proc.stdout
    assert (sweep / "report_pivot.png").read_bytes()[:4] == b"\x89PNG"
    assert "cell" in out and "nrmse" in out and "2/3 (1 missing)" in out and "±" in out
    assert "job 12" in out and "failed" in out and "[try clip=norm]" in out
    assert f"written to {sweep / 'report.csv'}" in out and (sweep / "report.md").is_file()

    no_pivot = run_cli("report", str(sweep), "--plot", cwd=tmp_path, check=False)
    assert no_pivot.returncode == 2 and "--plot draws the pivot" in no_pivot.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli("report", str(empty), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "holds no job folders" in proc.stderr


def test_job_folder_names_say_what_they_are() -> None:
    assert load.job_dirname(3, "cell=gru,optim.lr=0.001") == "3_cell=gru,optim.lr=0.001"
    assert load.job_dirname(0, "") == "0"  # a sweep without overrides: the number alone
    # '/' would make subfolders, spaces and brackets trouble shells: all become '_'
    assert load.job_dirname(1, "task.data.path=/d/x y.txt,+x=[1]") == (
        "1_task.data.path=_d_x_y.txt,+x=_1_"
    )
    long = load.job_dirname(12, ",".join(f"model.key_{i}=value" for i in range(40)))
    assert len(long) == load.JOB_DIRNAME_MAX and long.startswith("12_model.key_0=value,")
    assert [load.job_number(n) for n in ("7", "7_cell=gru", "12_a_b", ".submitit", "x_1", "")] == [
        7, 7, 12, None, None, None,
    ]  # fmt: skip


def test_named_and_numeric_job_folders_are_found_in_job_order(tmp_path: Path) -> None:
    """Job folders named by their overrides (2 before 10, not as text), an old sweep's
    numeric ones, and folders that are no job's (.submitit, a plot) left out."""
    tmp_path = tmp_path / "multirun" / "2026-01-01_00-00-00-000000"
    for num in (10, 2, 0):
        write_job(tmp_path, load.job_dirname(num, f"train.seed={num}"), [f"train.seed={num}"],
                  {"status": "completed", "final": {"nrmse": num / 10}})  # fmt: skip
    write_job(tmp_path, 1, ["train.seed=1"], {"status": "completed", "final": {"nrmse": 0.1}})
    (tmp_path / ".submitit" / "123_0").mkdir(parents=True)
    (tmp_path / "report_pivot.png").write_bytes(b"")
    found = load.find_job_dirs(tmp_path)
    assert [p.name for p in found] == ["0_train.seed=0", "1", "2_train.seed=2", "10_train.seed=10"]
    jobs = load.load_sweep(tmp_path)
    assert [(j.name, j.folder) for j in jobs] == [(p.name.partition("_")[0], p.name) for p in found]
    assert [j.final["nrmse"] for j in jobs] == [0.0, 0.1, 0.2, 1.0]
    # a folder holding sweeps of named jobs: the hint names one
    with pytest.raises(RnnexpError, match="holds sweeps: pick one") as caught:
        load.find_job_dirs(tmp_path.parent)
    assert f"e.g. {tmp_path}" in str(caught.value)
