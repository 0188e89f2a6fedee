"""The probe server: one warm process per grading run, fresh namespaces for each submission's models.

Models here are MLflow "models from code": the file's top level runs when the model loads, and so does its
PythonModel's ``load_context``, exactly where a hostile pickle would run its code. Each attack test loads one
hostile model, then two honest ones in the same server, and checks that the honest ones get exactly their own
predictions and that nothing of the attacker is left running. Other tests check the per-model outcome of a
request of many models, and that models are copied out of a submission without following its links and
without holding many descriptors.
"""

from __future__ import annotations

import dataclasses
import math
import os
import resource
import shutil
import textwrap
import time
import uuid
import warnings
from pathlib import Path

import mlflow.pyfunc
import pytest

from grader import sandbox
from grader.probe import MAX_MODEL_DEPTH, MAX_MODEL_FILES, ProbeService, copy_model
from grader.rubric import load as load_rubric
from tests.isolation import require_bwrap

REPO = Path(__file__).resolve().parents[1]
RUBRIC = load_rubric(REPO / "homework" / "homework-195.rubric.toml")
TEST_ROWS = 4128  # 20 % of California Housing
PROBE_SECONDS = 10
# bwrap, the sandbox's supervisor, the server, and the next request's intermediate and worker, made ahead.
SERVER_CHAIN = 5

MODEL_FILE = """
import json, os, signal, subprocess, sys, time
import mlflow
from mlflow.pyfunc import PythonModel

IN_PROBE = bool(os.environ.get("@MARKER@"))  # in the probe only: saving the model runs this file too
@HELPERS@
if IN_PROBE:
@TOP_LEVEL@

class Model(PythonModel):
    def load_context(self, context):
        if IN_PROBE:
@LOAD_CONTEXT@

    def predict(self, context, model_input, params=None):
        return [float(@PREDICTION@)] * len(model_input)

mlflow.models.set_model(Model())
"""

# What the attackers run once they have outlived their request: wait for the next one's models in the inbox,
# read them, and keep replacing the answer files of the probe's children (unlink and rename) with forged ones.
HAUNT = """
def haunt(inbox, rows, seconds=60):
    import glob
    forged = json.dumps({key: {"ok": True, "error": None, "predictions": [9.0] * rows} for key in ("production", "0")})
    def models():  # the inbox changes when the grader empties it and copies the next models in
        return os.stat(inbox).st_mtime_ns

    seen = models()
    end = time.time() + seconds
    while time.time() < end:
        time.sleep(0.002)
        try:
            if models() == seen:
                continue
            for folder, _, names in os.walk(inbox):  # the next student's models
                for name in names:
                    with open(os.path.join(folder, name), "rb") as stream:
                        stream.read()
        except OSError:
            continue
        for path in glob.glob("/tmp/**/answer.json", recursive=True):
            try:
                if open(path).read() != forged:
                    with open(path + ".forged", "w") as stream:
                        stream.write(forged)
                    os.rename(path + ".forged", path)
            except OSError:
                pass


def exit_main_thread_keeping(target):
    # The raw exit syscall ends the calling thread only (exit_group would end them all): the process shows as a
    # zombie in /proc while the thread lives on.
    import ctypes, platform, threading
    threading.Thread(target=target).start()
    ctypes.CDLL(None).syscall({"x86_64": 60, "aarch64": 93}[platform.machine()], 0)
"""

HAUNTING = "haunt(INBOX, ROWS)"
ATTACKS = {
    "thread_exit_in_the_worker": f"exit_main_thread_keeping(lambda: {HAUNTING})",
    "thread_exit_in_a_child": f"""
if os.fork() == 0:
    os.setsid()
    exit_main_thread_keeping(lambda: {HAUNTING})
""",
    "double_fork": f"""
child = os.fork()
if child == 0:
    if os.fork() == 0:
        {HAUNTING}
    os._exit(0)
os.waitpid(child, 0)
""",
    "setsid": f"""
if os.fork() == 0:
    os.setsid()
    {HAUNTING}
    os._exit(0)
""",
    "a_new_program_sleeping_until_the_next_request": """
program = "import json, os, time\\n" + HAUNT + "\\nhaunt(%r, %d)" % (INBOX, ROWS)
subprocess.Popen([sys.executable, "-c", program], start_new_session=True)
""",
}
# Signal everything it can name: its parent (the server, in a plain child), every pid in /proc, then kill(-1).
SIGNAL_ATTACK = """
for pid in {os.getppid(), *(int(name) for name in os.listdir("/proc") if name.isdigit())} - {0, os.getpid()}:
    try:
        os.kill(pid, signal.@SIGNAL@)
    except OSError:
        pass
os.kill(-1, signal.@SIGNAL@)
"""
# Every directory it may write to, but the read-only kit and Python, and the kernel's own files.
WRITABLE = """
def writable_folders():
    skip = ("/proc", "/sys", "/usr", sys.prefix, sys.base_prefix)
    for folder, children, _ in os.walk("/"):
        if folder.startswith(skip):
            children[:] = []
        elif os.access(folder, os.W_OK):
            yield folder
"""


def code_model(
    workdir: Path,
    name: str,
    top_level: str = "",
    prediction: str = "0.5",
    load_context: str = "",
    helpers: str = "",
) -> Path:
    """A pyfunc model whose file runs ``top_level``, and its ``load_context`` runs ``load_context``, when it loads
    in the probe, and that predicts ``prediction`` for every row."""
    code = workdir / f"{name}.py"
    text = MODEL_FILE
    for placeholder, value in (
        ("@MARKER@", sandbox.MARKER_VAR),
        ("@HELPERS@", helpers),
        ("@TOP_LEVEL@", textwrap.indent(top_level.strip() or "pass", " " * 4)),
        ("@LOAD_CONTEXT@", textwrap.indent(load_context.strip() or "pass", " " * 12)),
        ("@PREDICTION@", prediction),
    ):
        text = text.replace(placeholder, value)
    code.write_text(text)
    folder = workdir / "mlruns" / name
    # MLflow suggests type hints to every PythonModel without them, from inside its own warning filter (so a
    # pytest filter cannot silence it); these test models are minimal on purpose.
    with warnings.catch_warnings(record=True):
        mlflow.pyfunc.save_model(folder, python_model=str(code), pip_requirements=["mlflow"])
    return folder


def attacker_model(workdir: Path, probes: ProbeService, name: str, attack: str) -> Path:
    helpers = f"{HAUNT}\nHAUNT = {HAUNT!r}\nINBOX = {str(probes.inbox)!r}\nROWS = {TEST_ROWS}\n"
    return code_model(workdir, name, load_context=attack, helpers=helpers)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("submission")


@pytest.fixture(scope="module")
def probes():
    service = ProbeService(dataclasses.replace(RUBRIC, probe_seconds=PROBE_SECONDS))
    yield service
    service.close()


@pytest.fixture(scope="module")
def honest(workdir) -> list[Path]:
    return [code_model(workdir, f"honest-{value}", prediction=str(value)) for value in (1, 2)]


def server_pid(probes: ProbeService) -> int:
    """The server's pid on this machine: the third process below bwrap (see SERVER_CHAIN)."""
    return chain_below(probes.process.pid)[2]


def chain_below(root: int) -> list[int]:
    """The processes below ``root``, level by level; fails unless each level holds exactly one."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            with_state = _stat_fields(int(name))
            if with_state:
                parents[int(name)] = int(with_state[1])
    chain, level = [], [root]
    while level := [pid for pid, parent in parents.items() if parent in level]:
        assert len(level) == 1, f"more than one process below {chain[-1:] or root}: {level}"
        chain.extend(level)
    return chain


def _stat_fields(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def assert_nothing_left(probes: ProbeService) -> None:
    """Only the server's own processes run in its sandbox, and none of them is a zombie: whatever an attacker
    started would hang below one of them (in bwrap's pid namespace, orphans go to its init)."""
    deadline = time.monotonic() + 10  # the next request's namespaces are made just after the reply
    while True:
        chain = chain_below(probes.process.pid)
        states = [_stat_fields(pid)[:1] for pid in chain]
        if (len(chain) == SERVER_CHAIN and all(state == ["S"] for state in states)) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(chain) == SERVER_CHAIN, f"expected bwrap, the supervisor, the server and its standby: {chain}"
    assert all(state == ["S"] for state in states), f"a process of the sandbox is not asleep: {states}"
    if os.geteuid() == 0:  # everything of the sandbox's uid is in that chain, wherever it went
        uid = sandbox.sandbox_uid(probes.home)
        of_uid = {int(name) for name in os.listdir("/proc") if name.isdigit() and _owner(int(name)) == uid}
        assert of_uid <= set(chain), f"processes of the sandbox's uid outside it: {of_uid - set(chain)}"


def _owner(pid: int) -> int | None:
    try:
        return Path(f"/proc/{pid}").stat().st_uid
    except OSError:
        return None


def test_one_warm_server_scores_submission_after_submission(probes, workdir):
    first = code_model(workdir, "first", prediction="2.0")
    second = code_model(workdir, "second", prediction="1.0")
    scores = probes.score({"production": (workdir, first), "best": (workdir, second)})
    server = probes.process.pid
    again = probes.score({"production": (workdir, first)})

    assert scores["production"].ok and scores["best"].ok, (scores, probes._log_tail())
    assert scores["production"].predictions == [2.0] * TEST_ROWS
    assert scores["best"].predictions == [1.0] * TEST_ROWS
    assert scores["production"].head == [2.0] * RUBRIC.split.prediction_rows
    truth = probes.targets  # the grader scores the predictions itself, against the true values
    assert scores["production"].rmse == pytest.approx(math.sqrt(sum((2.0 - y) ** 2 for y in truth) / len(truth)))
    assert again["production"].ok and probes.process.pid == server, "the server must be reused, not restarted"


@pytest.mark.parametrize("attack", ATTACKS, ids=list(ATTACKS))
def test_what_an_attacker_starts_dies_with_its_request(probes, workdir, honest, attack):
    require_bwrap("ending what a model started with its request")
    probes.score({"production": (workdir, honest[0])})  # a running server, before the attack
    server = server_pid(probes)
    attacker = attacker_model(workdir, probes, f"attacker-{attack}", ATTACKS[attack])

    probes.score({"production": (workdir, attacker)})  # may fail or succeed: it is the attacker's own score
    after = [probes.score({"production": (workdir, model)})["production"] for model in honest]

    assert [score.error for score in after] == ["", ""]
    assert after[0].predictions == [1.0] * TEST_ROWS and after[1].predictions == [2.0] * TEST_ROWS
    assert server_pid(probes) == server, "the server was never restarted"
    assert_nothing_left(probes)


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGSTOP"])
def test_a_model_that_signals_the_server_reaches_only_its_own_namespace(probes, workdir, honest, signal_name):
    require_bwrap("keeping a model away from the server")
    attacker = code_model(
        workdir, f"signals-{signal_name}", load_context=SIGNAL_ATTACK.replace("@SIGNAL@", signal_name)
    )
    probes.score({"production": (workdir, honest[0])})
    server = server_pid(probes)

    probes.score({"production": (workdir, attacker)})
    after = [probes.score({"production": (workdir, model)})["production"] for model in honest]

    assert [score.error for score in after] == ["", ""]
    assert after[0].predictions == [1.0] * TEST_ROWS and after[1].predictions == [2.0] * TEST_ROWS
    assert server_pid(probes) == server, "the attacker reached the server"
    assert_nothing_left(probes)


def test_what_a_model_writes_anywhere_never_reaches_the_next_one(probes, workdir):
    require_bwrap("fresh scratch space for every request")
    token = uuid.uuid4().hex
    planter = code_model(
        workdir,
        "planter",
        helpers=WRITABLE,
        load_context=f"""
for folder in writable_folders():
    try:
        open(os.path.join(folder, "planted-{token}"), "w").write("left for the next student")
    except OSError:  # /dev/pts says it is writable, and then refuses
        pass
# The same through the sandbox's other processes: their root folder and working directory.
for pid in filter(str.isdigit, os.listdir("/proc")):
    for folder in ("root/tmp", "root/dev/shm", "cwd"):
        try:
            open(f"/proc/{{pid}}/{{folder}}/planted-{token}", "w").write("left for the next student")
        except OSError:
            pass
os.makedirs("/tmp/locked/deeper")
os.chmod("/tmp/locked", 0)  # unreadable, to make a wipe fail
subprocess.Popen(["sleep", "300"], start_new_session=True)  # outlives the model, in a session of its own
""",
    )
    # Predicts 1 for each planted file it finds, plus 10 for every other live process it can see.
    spy = code_model(
        workdir,
        "spy",
        helpers=WRITABLE
        + """
def others():
    found = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # covered: one of the sandbox's own processes
        found += pid != os.readlink("/proc/self") and state != "Z"  # its pid there, not in its namespace
    return found
""",
        prediction=f'sum(os.path.exists(os.path.join(folder, "planted-{token}")) for folder in writable_folders())'
        ' + os.path.exists("/tmp/locked") + 10 * others()',
    )
    assert probes.score({"production": (workdir, planter)})["production"].ok
    seen = probes.score({"production": (workdir, spy)})["production"]

    assert seen.ok, seen.error
    assert seen.head[0] == 0.0, "a planted file or the background process survived into the next request"
    supervisor = chain_below(probes.process.pid)[1]  # in the server's mount namespace, and dumpable without root
    for folder in (probes.home, Path(f"/proc/{supervisor}/root/tmp"), Path(f"/proc/{supervisor}/root/dev/shm")):
        assert not (folder / f"planted-{token}").exists(), f"planted in the server's {folder}"
    assert_nothing_left(probes)


@pytest.mark.parametrize(
    ("misdeed", "error"),
    [
        ("time.sleep(600)", "took too long"),
        ("os._exit(3)", "exit code 3"),
        ('os.write(3, b"[" * 10_000_000)', "answer was longer than"),
    ],
    ids=["hangs", "crashes", "floods_its_answer"],
)
def test_one_bad_model_costs_only_itself_in_a_request_of_many(probes, tmp_path, misdeed, error):
    before = code_model(tmp_path, "before-the-bad-one", prediction="3.0")
    bad = code_model(tmp_path, f"bad-{misdeed[:8]}", load_context=misdeed)
    after = code_model(tmp_path, "after-the-bad-one", prediction="4.0")
    started = time.monotonic()

    scores = probes.score({"m-before": (tmp_path, before), "m-bad": (tmp_path, bad), "m-after": (tmp_path, after)})

    assert time.monotonic() - started < PROBE_SECONDS + 2
    assert not scores["m-bad"].ok and error in scores["m-bad"].error, scores["m-bad"].error
    assert scores["m-before"].predictions == [3.0] * TEST_ROWS, scores["m-before"].error
    assert scores["m-after"].predictions == [4.0] * TEST_ROWS, scores["m-after"].error


def test_one_request_scores_every_run_model_of_a_submission(probes, workdir):
    models = {
        f"m-{index:032x}": (workdir, code_model(workdir, f"run-{index}", prediction=str(index))) for index in range(40)
    }

    scores = probes.score(models)

    assert list(scores) == list(models)
    for index, label in enumerate(models):
        assert scores[label].ok and scores[label].predictions == [float(index)] * TEST_ROWS, scores[label].error


def test_a_request_of_200_models_gets_an_answer_for_each(workdir, tmp_path):
    one = code_model(workdir, "one-of-many", prediction="0.1 + 0.2")  # 0.30000000000000004: a long number
    models = {}
    for index in range(200):  # 17 MB of predictions in all
        copy = shutil.copytree(one, tmp_path / f"model-{index}")
        (copy / "variant.txt").write_text(str(index))  # other bytes: loaded on its own
        models[f"m-{index:032x}"] = (tmp_path, copy)
    service = ProbeService(dataclasses.replace(RUBRIC, probe_seconds=60))
    try:
        scores = service.score(models)
    finally:
        service.close()

    assert [label for label, score in scores.items() if score.predictions == [0.1 + 0.2] * TEST_ROWS] == list(models)


def test_identical_model_folders_are_loaded_once(probes, workdir):
    # Counts its loads in the request's /tmp, and predicts that count.
    counter = code_model(
        workdir,
        "counter",
        load_context="""
loads = int(open("/tmp/loads").read()) + 1 if os.path.exists("/tmp/loads") else 1
open("/tmp/loads", "w").write(str(loads))
self.loads = loads
""",
        prediction="self.loads",
    )
    twin = shutil.copytree(counter, workdir / "mlruns" / "counter-twin")

    scores = probes.score({"m-counter": (workdir, counter), "m-twin": (workdir, twin)})

    assert scores["m-counter"].predictions == scores["m-twin"].predictions == [1.0] * TEST_ROWS


def test_a_model_that_never_finishes_loading_times_out_and_the_next_is_served(workdir):
    service = ProbeService(dataclasses.replace(RUBRIC, probe_seconds=3))
    try:
        stuck = service.score({"production": (workdir, code_model(workdir, "stuck", top_level="time.sleep(600)"))})
        after = service.score({"production": (workdir, code_model(workdir, "after-stuck"))})
    finally:
        service.close()
    assert not stuck["production"].ok and "took too long" in stuck["production"].error
    assert after["production"].ok, after["production"].error


def test_a_model_folder_outside_the_memory_budget_is_refused_not_copied(workdir):
    big = code_model(workdir, "big")
    (big / "weights.bin").write_bytes(b"\0" * 2**20)
    tiny = dataclasses.replace(RUBRIC, limits=dataclasses.replace(RUBRIC.limits, memory_mb=1))
    service = ProbeService(tiny)
    try:
        refused = service.score({"production": (workdir, big)})["production"]
    finally:
        service.close()
    assert not refused.ok and "larger than the memory it may use" in refused.error


def test_models_share_the_copy_budget_and_one_too_large_fails_alone(tmp_path):
    workdir = tmp_path / "work"
    sizes = {"first": 600_000, "second": 600_000, "small": 1000}
    for name, size in sizes.items():
        (workdir / name).mkdir(parents=True)
        (workdir / name / "weights.bin").write_bytes(name.encode() * (size // len(name)))
    shutil.copytree(workdir / "small", workdir / "small-again")
    tiny = dataclasses.replace(RUBRIC, limits=dataclasses.replace(RUBRIC.limits, memory_mb=1))
    service = ProbeService(tiny)
    service.folder = tmp_path / "probe"
    service.inbox.mkdir(parents=True)

    names = ["first", "second", "small", "small-again"]
    failed, request, same_as = service._copy({name: (workdir, workdir / name) for name in names})

    assert list(request) == ["first", "small"]
    assert list(failed) == ["second"] and "the models before it left 0.4 MB" in failed["second"].error
    assert same_as == {"small-again": "small"}
    assert sorted(os.listdir(service.inbox)) == ["0", "2"], "a refused or duplicate copy is not left behind"


def test_copying_a_model_never_follows_links_nor_opens_fifos(tmp_path):
    workdir = tmp_path / "work"
    model = workdir / "mlruns" / "model"
    (model / "nested").mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "nested" / "weights.bin").write_bytes(b"w" * 100)
    secret = tmp_path / "secret.txt"
    secret.write_text("the grader's secret")
    (model / "leak.txt").symlink_to(secret)
    (model / "outside").symlink_to(tmp_path)
    os.mkfifo(model / "blocks-forever")

    copied = copy_model(workdir, model, tmp_path / "copy", budget=10_000)

    names = sorted(str(path.relative_to(tmp_path / "copy")) for path in (tmp_path / "copy").rglob("*"))
    assert names == ["MLmodel", "nested", "nested/weights.bin"]
    assert copied.size == len("flavors: {}\n") + 100


def test_a_model_reached_through_a_link_is_refused(tmp_path):
    workdir = tmp_path / "work"
    (workdir / "mlruns").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (workdir / "mlruns" / "model").symlink_to(elsewhere)
    with pytest.raises(ValueError):  # it resolves outside the working directory
        copy_model(workdir, workdir / "mlruns" / "model", tmp_path / "copy", budget=10_000)


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def few_descriptors():
    """Let this process open only 40 more descriptors than it holds: a copy holding more fails with EMFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(name) for name in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(highest + 40, hard), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_model_with_too_many_folders_fails_clearly_and_closes_every_descriptor(tmp_path):
    model = tmp_path / "work" / "model"
    for index in range(MAX_MODEL_FILES + 1):
        (model / f"folder-{index}").mkdir(parents=True)
    before = open_descriptors()

    for attempt in ("first", "second"):  # two such submissions killed the grader
        with pytest.raises(ValueError, match=f"more than {MAX_MODEL_FILES} files"):
            copy_model(tmp_path / "work", model, tmp_path / f"copy-{attempt}", budget=10**9)

    assert open_descriptors() == before


def test_a_wide_or_deep_model_is_copied_with_few_descriptors(tmp_path, few_descriptors):
    wide = tmp_path / "work" / "wide"
    for index in range(5000):
        (wide / f"folder-{index}").mkdir(parents=True)
        (wide / f"folder-{index}" / "part.bin").write_bytes(b"x")
    deep = tmp_path / "work" / "deep" / Path(*["level"] * MAX_MODEL_DEPTH)
    deep.mkdir(parents=True)
    (deep / "weights.bin").write_bytes(b"y" * 10)

    assert copy_model(tmp_path / "work", wide, tmp_path / "wide-copy", budget=10**9).size == 5000
    assert copy_model(tmp_path / "work", tmp_path / "work" / "deep", tmp_path / "deep-copy", budget=10**9).size == 10
    assert (tmp_path / "deep-copy" / Path(*["level"] * MAX_MODEL_DEPTH) / "weights.bin").read_bytes() == b"y" * 10


def test_a_chain_of_5000_nested_folders_fails_clearly_without_exhausting_anything(tmp_path, few_descriptors):
    top = tmp_path / "work" / "chain"
    top.mkdir(parents=True)
    _make_chain(top, 5000)  # deeper than PATH_MAX allows by name: made a level at a time
    before = open_descriptors()
    try:
        with pytest.raises(ValueError, match=f"nest deeper than {MAX_MODEL_DEPTH} levels"):
            copy_model(tmp_path / "work", top, tmp_path / "copy", budget=10**9)
        assert open_descriptors() == before
    finally:
        sandbox.remove_tree(top)  # rm: shutil.rmtree recurses, pytest's clean-up too


def _make_chain(top: Path, depth: int) -> None:
    descriptor = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=descriptor)
        inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=descriptor)
        os.close(descriptor)
        descriptor = inner
    os.close(descriptor)
