"""Fuzzing in CI: builds the libFuzzer targets in fuzz/ with clang, runs each for a
bounded time over its committed corpus, replays every regression input once, and checks
that the committed seeds are what fuzz/write_seeds.cpp writes from today's messages.
fuzz/README.md says how to run a target longer and how to keep a finding."""

import filecmp
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "fuzz"
BUILD = Path(os.environ.get("FUZZ_BUILD_DIR", FUZZ / "build"))
TARGETS = ("messages", "frames")  # fuzz/fuzz_<target>.cpp, corpus/<target>, regressions/<target>
# Per target; the targets run side by side, so together about this long on 2 cores.
FUZZ_SECONDS = 25
# Every sanitizer report ends the run with a failure, with a stack to read.
SANITIZER_ENV = {
    "ASAN_OPTIONS": "abort_on_error=1:detect_leaks=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
}


@pytest.fixture(scope="module")
def fuzzers():
    if shutil.which("clang++") is None:
        pytest.fail("clang++ is not installed: run scripts/setup.sh, which installs clang (libFuzzer) for fuzz/")
    r = subprocess.run([str(FUZZ / "build.sh")], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"fuzz/build.sh failed:\n{r.stdout}\n{r.stderr}"
    return {t: BUILD / f"fuzz_{t}" for t in TARGETS}


def _env():
    return {**os.environ, **SANITIZER_ENV}


def _tail(text, lines=60):
    return "\n".join(text.splitlines()[-lines:])


@pytest.mark.timeout(900)
def test_seed_corpus_is_what_write_seeds_writes(fuzzers, tmp_path):
    r = subprocess.run([str(BUILD / "write_seeds"), str(tmp_path)], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"write_seeds failed:\n{r.stderr}"
    stale = []
    for target in TARGETS:
        cmp = filecmp.dircmp(tmp_path / target, FUZZ / "corpus" / target)
        stale += [f"{target}/{n}: missing" for n in cmp.left_only]
        stale += [f"{target}/{n}: no longer written" for n in cmp.right_only]
        _, mismatch, errors = filecmp.cmpfiles(tmp_path / target, FUZZ / "corpus" / target,
                                               cmp.common_files, shallow=False)
        stale += [f"{target}/{n}: differs" for n in mismatch + errors]
    assert not stale, ("fuzz/corpus is out of date with the messages (run fuzz/build.sh --write-seeds "
                       "and commit fuzz/corpus):\n  " + "\n  ".join(sorted(stale)))


@pytest.mark.timeout(900)
def test_regression_inputs_pass(fuzzers):
    ran = 0
    for target, binary in fuzzers.items():
        folder = FUZZ / "regressions" / target
        inputs = sorted(str(p) for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        if not inputs:
            continue
        r = subprocess.run([str(binary), *inputs], cwd=ROOT, env=_env(), capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, f"a regression input of {target} fails again:\n{_tail(r.stderr)}"
        assert f"Running: {inputs[-1]}" in r.stderr, f"{target} did not run its regression inputs"
        ran += len(inputs)
    assert ran > 0, "no regression inputs found under fuzz/regressions"


@pytest.mark.timeout(900)
def test_fuzz_every_target_for_a_bounded_time(fuzzers, tmp_path):
    procs = {}
    for target, binary in fuzzers.items():
        work = tmp_path / target
        (work / "corpus").mkdir(parents=True)
        log = open(work / "log", "w")
        # New inputs go to the scratch corpus (the first folder); the committed one is read only.
        cmd = [str(binary), f"-max_total_time={FUZZ_SECONDS}", "-timeout=10", "-rss_limit_mb=2048",
               "-print_final_stats=1", f"-artifact_prefix={work}/", str(work / "corpus"),
               str(FUZZ / "corpus" / target)]
        procs[target] = (subprocess.Popen(cmd, cwd=work, env=_env(), stdout=log, stderr=subprocess.STDOUT), log, work)
    failures = []
    for target, (proc, log, work) in procs.items():
        try:
            rc = proc.wait(timeout=FUZZ_SECONDS + 120)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        log.close()
        text = (work / "log").read_text(errors="replace")
        if rc != 0:
            found = sorted(p.name for p in work.iterdir() if p.name.startswith(("crash-", "leak-", "timeout-", "oom-")))
            failures.append(f"fuzz_{target} exited with {rc}; inputs kept: {found} in {work}\n"
                            f"(fix the bug, then add the input to fuzz/regressions/{target}/)\n{_tail(text)}")
        else:
            assert "Done " in text and "stat::number_of_executed_units" in text, f"fuzz_{target} did not fuzz:\n{_tail(text)}"
    assert not failures, "\n\n".join(failures)
