"""DiLoCo optimizers with real peer processes: exactness against a pure-torch reference,
peers killed between and during outer steps, a joiner, async and streaming variants.
Peers are compared bit for bit (hashes of θ_global, outer momentum and model)."""

import json
import os
import sys
import time
import warnings

import numpy as np

import pcomm
import pytest
import torch
from harness import _Proc, wait_for

WORKER = os.path.join(os.path.dirname(__file__), "diloco_worker.py")
sys.path.insert(0, os.path.dirname(__file__))
from diloco_worker import digest, make_model, shard  # noqa: E402


class DiLoCoPeer(_Proc):
    def __init__(self, coordinator, **cfg):
        cfg["coordinator"] = coordinator
        super().__init__([sys.executable, WORKER, json.dumps(cfg)])
        self.reports = []

    def read_all(self, timeout=120):
        """Every report until the worker says done (or dies)."""
        deadline = time.monotonic() + timeout
        while True:
            line = json.loads(self.read_line(max(0.1, deadline - time.monotonic())))
            if line.get("done"):
                return self.reports, line
            self.reports.append(line)

    def read_some(self, n, timeout=60):
        while len(self.reports) < n:
            self.reports.append(json.loads(self.read_line(timeout)))
        return self.reports


@pytest.fixture
def peers():
    procs = []
    yield procs
    for p in procs:
        p.cleanup()


def start(peers, coordinator, n, save_dir=None, **cfg):
    new = []
    for i in range(n):
        index = len(peers) + i
        extra = {"save": str(save_dir / f"g{index}.npz")} if save_dir else {}
        new.append(DiLoCoPeer(coordinator.address, index=index, **cfg, **extra))
    peers.extend(new)
    return new


def by_revision(reports):
    return {r["revision"]: r for r in reports}


def test_outer_step_matches_a_pure_torch_reference(coordinator, peers, tmp_path):
    H = 5
    procs = start(peers, coordinator, 3, save_dir=tmp_path, sync_every=H, rounds=1, min_world=3)
    results = [p.read_all() for p in procs]
    finals = [np.load(tmp_path / f"g{i}.npz") for i in range(3)]
    for f in finals[1:]:
        assert all(np.array_equal(f[k], finals[0][k]) for k in f.files), "peers differ"
    assert all(r[0][-1]["reduced"] == 3 for r in results)
    indices = [0, 1, 2]
    # Reference: same init, H inner SGD steps per shard, mean Δ, Nesterov outer SGD.
    theta0 = [p.detach().clone() for p in make_model(0).parameters()]
    deltas = []
    for i in indices:
        model = make_model(0)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = shard(i)
        for _ in range(H):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        deltas.append([t0 - p.detach() for t0, p in zip(theta0, model.parameters())])
    for k, t0 in enumerate(theta0):
        avg = sum(d[k] for d in deltas) / len(deltas)
        buf = avg.clone()
        expected = t0 - 0.7 * (avg + 0.9 * buf)
        got = torch.from_numpy(finals[0][f"arr_{k}"])
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6), (k, (got - expected).abs().max())


def assert_agree(all_reports, keys=("globals", "momentum")):
    """At every revision reported by several peers, they hold the same bits."""
    revisions = {}
    for reports in all_reports:
        for r in reports:
            revisions.setdefault(r["revision"], []).append(r)
    shared = [rev for rev, rs in revisions.items() if len(rs) > 1]
    assert shared, "no common revision to compare"
    for rev in shared:
        for key in keys:
            values = {r[key] for r in revisions[rev]}
            assert len(values) == 1, f"peers differ in {key} at revision {rev}"
    return shared


def test_peers_killed_between_and_during_outer_steps(coordinator, peers):
    procs = start(peers, coordinator, 4, sync_every=10, rounds=8, min_world=4, step_sleep=0.003)
    procs[1].read_some(3)  # revision 2 reached
    procs[1].kill()  # between outer steps (most likely: the inner steps take most of the time)
    assert wait_for(lambda: coordinator.collectives_running == 1, 30, interval=0.0005)
    procs[3].kill()  # during an outer all-reduce
    survivors = [procs[0], procs[2]]
    results = [p.read_all() for p in survivors]
    for reports, _done in results:
        assert reports[-1]["revision"] == 8
        assert reports[-1]["reduced"] == 2  # the last outer step ran over the two survivors
    assert_agree([r for r, _ in results], keys=("globals", "momentum", "params"))


@pytest.mark.parametrize("variant", ["sync", "async", "streaming"])
def test_joiner_ends_bit_identical(coordinator, peers, variant):
    cfg = dict(sync_every=8, rounds=14, step_sleep=0.004, variant=variant)
    first = start(peers, coordinator, 3, min_world=3, **cfg)
    joiner = start(peers, coordinator, 1, wait_go=True, **cfg)[0]
    first[0].read_some(3)  # a few outer steps in
    joiner.proc.stdin.write("go\n")
    joiner.proc.stdin.flush()
    results = [p.read_all() for p in first + [joiner]]
    reports = [r for r, _ in results]
    joined_at = reports[3][0]["revision"]
    assert joined_at >= 2, "the joiner should arrive mid-training"
    keys = ("globals", "momentum") if variant == "streaming" else ("globals", "momentum", "params")
    shared = assert_agree(reports, keys=keys)
    assert max(shared) >= joined_at + 2, "compared well after the join"
    # It took part: some outer all-reduce ran over all four peers. (Its last report may see
    # fewer: peers that finish their rounds first leave.)
    assert any(r["reduced"] == 4 for r in reports[3])


@pytest.mark.parametrize("variant", ["async", "streaming"])
def test_variants_keep_peers_identical_with_quantization(coordinator, peers, variant):
    procs = start(peers, coordinator, 3, sync_every=6, rounds=5, min_world=3, variant=variant,
                  quantization="minmax_u8", fragments=3)
    results = [p.read_all() for p in procs]
    reports = [r for r, _ in results]
    assert all(r[-1]["revision"] >= 5 for r in reports)
    assert_agree(reports)
    # Training moved θ_global away from its start.
    assert reports[0][0]["globals"] != reports[0][-1]["globals"]


def test_diloco_argument_errors(coordinator):
    with pcomm.Communicator(coordinator.address) as comm:
        model = make_model(0)
        inner = torch.optim.SGD(model.parameters(), lr=0.1)
        with pytest.raises(pcomm.errors.InvalidArgumentError, match="sync_every"):
            pcomm.optim.DiLoCo(model, inner, comm, sync_every=0)
        with pytest.raises(pcomm.errors.InvalidArgumentError, match="torch.optim.Optimizer"):
            pcomm.optim.DiLoCo(model, "adam", comm, sync_every=5)
        with pytest.raises(pcomm.errors.InvalidArgumentError, match="nn.Module"):
            pcomm.optim.DiLoCo("model", inner, comm, sync_every=5)


def hooks(model):
    """Forward pre-hooks on the model and all its submodules."""
    return sum(len(m._forward_pre_hooks) for m in model.modules())


def test_an_optimizer_dropped_before_its_first_use_leaves_the_model_alone(coordinator):
    """The join-at-first-use hook holds the optimizer weakly: one rebuilt before training
    (say, after a wrong checkpoint) is freed, and its hook goes with it."""
    import gc
    import weakref

    with pcomm.Communicator(coordinator.address, timeout=10) as comm:
        comm.connect()
        model = make_model(0)
        dropped = pcomm.optim.DiLoCo(model, torch.optim.SGD(model.parameters(), lr=0.1), comm, sync_every=2)
        with pytest.raises(pcomm.errors.InvalidArgumentError, match="DiLoCo.state_dict"):
            dropped.load_state_dict({"format": "something else"})
        gone = weakref.ref(dropped)
        del dropped
        gc.collect()
        assert gone() is None, "the model's hook kept the dropped optimizer alive"
        assert hooks(model) == 0
        opt = pcomm.optim.DiLoCo(model, torch.optim.SGD(model.parameters(), lr=0.1), comm, sync_every=2)
        for _ in range(4):
            opt.zero_grad()
            model(torch.ones(3, model[0].in_features)).sum().backward()
            opt.step()
        assert opt.outer_step == 2 and hooks(model) == 0


def test_the_first_use_hook_survives_pickling_child_forwards_and_threads(coordinator):
    """Before its first use the optimizer's join hook sits on the model and each
    submodule: torch.save(model) and deepcopy still work (the copy's hook is inert), a
    first forward through a child module joins, forwards from two threads join once, and
    a TorchScript submodule is left alone."""
    import copy
    import io
    import threading

    def joined(opt):  # load_state_dict is refused once the peer has taken the run's state
        try:
            opt.load_state_dict({"format": "probe"})
        except pcomm.errors.InvalidArgumentError as e:
            return "must come right after" in str(e)
        return False

    with pcomm.Communicator(coordinator.address, timeout=10) as comm:
        comm.connect()
        model = make_model(0)
        opt = pcomm.optim.DiLoCo(model, torch.optim.SGD(model.parameters(), lr=0.1), comm, sync_every=2)
        assert hooks(model) == len(list(model.modules()))
        buf = io.BytesIO()
        torch.save(model, buf)
        buf.seek(0)
        loaded = torch.load(buf, weights_only=False)
        twin = copy.deepcopy(model)
        x = torch.ones(3, model[0].in_features)
        loaded(x), twin(x)
        assert not joined(opt), "a copy's forward joined the run for the original optimizer"
        assert hooks(loaded) == hooks(twin) == 0  # the inert hooks removed themselves
        model[0](x)  # a child module first
        assert joined(opt) and hooks(model) == 0

    with pcomm.Communicator(coordinator.address, timeout=10) as comm:
        comm.connect()
        model2 = make_model(0)
        opt2 = pcomm.optim.DiLoCo(model2, torch.optim.SGD(model2.parameters(), lr=0.1), comm, sync_every=2)
        errors, syncs = [], []
        sync = comm.sync_shared_state

        def slow_sync(*args, **kwargs):  # holds the join open while the other thread arrives
            syncs.append(threading.get_ident())
            time.sleep(0.3)
            return sync(*args, **kwargs)

        comm.sync_shared_state = slow_sync

        def forward():
            try:
                model2(x)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=forward) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == [] and len(syncs) == 1 and joined(opt2) and hooks(model2) == 0

    with pcomm.Communicator(coordinator.address, timeout=10) as comm:
        comm.connect()  # a TorchScript submodule takes no hooks: the root's joins
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated, still used
            scripted = torch.nn.Sequential(torch.jit.script(torch.nn.Linear(8, 4)), torch.nn.Tanh())
        opt3 = pcomm.optim.DiLoCo(scripted, torch.optim.SGD(scripted.parameters(), lr=0.1), comm, sync_every=2)
        scripted(x)
        assert joined(opt3) and hooks(scripted) == 0


def test_a_layout_mismatch_names_the_model_parameter(coordinator):
    """Two peers whose models differ: the error names the parameter ("0.bias"), not an
    internal tensor number."""
    import re
    import threading

    models = [torch.nn.Sequential(torch.nn.Linear(4, n)) for n in (3, 5)]
    comms = [pcomm.Communicator(coordinator.address, timeout=10) for _ in models]
    errors = []

    def run(i):
        try:
            comms[i].connect()
            comms[i].wait_for_peers(2)
            opt = pcomm.optim.DiLoCo(models[i], torch.optim.SGD(models[i].parameters(), lr=0.1), comms[i], sync_every=5)
            models[i](torch.zeros(1, 4))  # the first use (here a forward) syncs the run's state
            raise AssertionError(f"the forward ran on peer {i} at outer step {opt.outer.shared.revision}")
        except pcomm.errors.PcommError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
        t.join(0.3)
    for t in threads:
        t.join(30)
    for c in comms:
        c.close()
    assert errors and all(re.search(r"tensor '0\.(weight|bias)' has shape", e) for e in errors), errors
    assert not any("global.0" in e or "param.0" in e for e in errors), errors


def test_diloco_is_a_torch_optimizer(coordinator):
    """Schedulers, GradScaler, clipping and closures work on DiLoCo as on any optimizer,
    acting on the inner optimizer's own param_groups."""
    with pcomm.Communicator(coordinator.address, timeout=10) as comm:
        comm.connect()
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2)
        inner = torch.optim.AdamW(model.parameters(), lr=1e-2)
        opt = pcomm.optim.DiLoCo(model, inner, comm, sync_every=5)
        assert isinstance(opt, torch.optim.Optimizer)
        assert opt.param_groups is inner.param_groups and opt.state is inner.state
        sched = torch.optim.lr_scheduler.StepLR(opt, 3, gamma=0.5)
        scaler = torch.amp.GradScaler("cpu")
        for _ in range(12):
            opt.zero_grad(set_to_none=True)
            scaler.scale(model(torch.randn(8, 4)).pow(2).mean()).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
            sched.step()
        assert inner.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5**4)
        assert (opt.local_step, opt.outer_step) == (12, 2)

        def closure():
            opt.zero_grad()
            loss = model(torch.ones(1, 4)).sum()
            loss.backward()
            return loss

        with torch.no_grad():
            before = float(model(torch.ones(1, 4)).sum())
        assert float(opt.step(closure).detach()) == before  # the closure ran, before the update
        assert opt.local_step == 13
        with pytest.raises(pcomm.errors.InvalidArgumentError, match="right after constructing"):
            opt.load_state_dict(opt.state_dict())
        # A loaded checkpoint keeps schedulers working: torch's load replaces the inner
        # optimizer's param_groups and state, and the DiLoCo shares the new ones.
        other = torch.nn.Linear(4, 2)
        resumed = pcomm.optim.DiLoCo(other, torch.optim.AdamW(other.parameters(), lr=1.0), comm, sync_every=5)
        resumed.load_state_dict(opt.state_dict())
        assert resumed.param_groups is resumed.inner.param_groups and resumed.state is resumed.inner.state
        assert len(resumed.state) == 2, "the inner AdamW moments came with the checkpoint"
        lr = resumed.inner.param_groups[0]["lr"]
        assert lr == pytest.approx(1e-2 * 0.5**4)
        sched = torch.optim.lr_scheduler.StepLR(resumed, 1, gamma=0.5)
        with warnings.catch_warnings():  # torch notes that no optimizer step came before
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step")
            sched.step()
        assert resumed.inner.param_groups[0]["lr"] == pytest.approx(lr * 0.5)


def run_threads(fns, timeout=60):
    import threading

    errors = []

    def guard(fn):
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=guard, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not errors, errors


def test_newcomers_that_outnumber_the_run_never_roll_it_back(coordinator):
    """One peer trains to outer step 2, then two fresh peers (the same initial model) are
    admitted at one boundary. They outnumber it, but its state is the run's progress:
    they take its outer step and bits, and it never goes back (found by
    stress/diloco_churn.py, where the run fell back to outer step 0)."""
    import threading

    comms = [pcomm.Communicator(coordinator.address, timeout=20) for _ in range(3)]
    models = [make_model(0) for _ in range(3)]
    opts = [None] * 3
    history, joined, steps = {}, {}, []  # the incumbent's θ_global at each outer step it reached
    ready = threading.Event()

    def train(i, until):
        x, y = shard(i)
        while opts[i].outer_step < until:
            opts[i].zero_grad()
            torch.nn.functional.mse_loss(models[i](x), y).backward()
            opts[i].step()
            if i == 0 and (not steps or steps[-1] != opts[0].outer_step):
                history[opts[0].outer_step] = [g.clone() for g in opts[0].outer.globals]
                steps.append(opts[0].outer_step)

    def make(i):
        opts[i] = pcomm.optim.DiLoCo(models[i], torch.optim.SGD(models[i].parameters(), lr=0.1), comms[i], sync_every=2)

    def incumbent():
        comms[0].connect()
        make(0)
        train(0, 2)
        ready.set()
        assert wait_for(lambda: coordinator.pending_peers == 2, 30), "the newcomers never said hello"
        train(0, 5)  # the next boundary admits both at once

    def newcomer(i):
        assert ready.wait(30)
        comms[i].connect()
        make(i)
        joined[i] = (opts[i].outer_step, [g.clone() for g in opts[i].outer.globals])  # the first use joins
        train(i, 5)

    try:
        run_threads([incumbent, lambda: newcomer(1), lambda: newcomer(2)])
    finally:
        for c in comms:
            c.close()
    assert steps == list(range(6)), f"the incumbent's outer steps went {steps}"
    for i in (1, 2):
        step, theta = joined[i]
        assert step >= 2 and all(torch.equal(a, b) for a, b in zip(theta, history[step])), (i, step)
    assert len({digest(o.outer.globals) for o in opts}) == 1 and all(o.outer_step == 5 for o in opts)


@pytest.mark.parametrize("variant,older", [("sync", False), ("streaming", False), ("sync", True)])
def test_a_run_resumes_from_one_peers_checkpoint(variant, older, tmp_path):
    """Train, stop every peer, restart 3 peers of which one loads a checkpoint: all
    continue from its outer step with its exact bits (fresh peers do not outvote it).
    With older=True a second peer loads an older checkpoint: the newest one wins."""
    import io

    def make(seed):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))

    def optimizer(model, comm, **kw):
        inner = torch.optim.AdamW(model.parameters(), lr=1e-2)
        cls = pcomm.optim.StreamingDiLoCo if variant == "streaming" else pcomm.optim.DiLoCo
        extra = {"fragments": 2} if variant == "streaming" else {}
        return cls(model, inner, comm, sync_every=4, **extra, **kw)

    def train(opt, model, index, outer_steps):
        x, y = shard(index)
        while opt.outer_step < outer_steps:
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y[:, :4]).backward()
            opt.step()

    def saved_bytes(opt):
        buf = io.BytesIO()
        torch.save(opt.state_dict(), buf)
        return buf.getvalue()

    saved = {}
    with pcomm.Coordinator() as coord:  # the first run: 2 peers, 3 outer steps
        def first(i):
            def go():
                with pcomm.Communicator(coord.address, timeout=30) as comm:
                    comm.connect()
                    comm.wait_for_peers(2)
                    model = make(0)
                    opt = optimizer(model, comm)
                    train(opt, model, i, 2)
                    if i == 0:
                        saved[2] = saved_bytes(opt)
                    train(opt, model, i, 3)
                    if i == 0:
                        saved[3] = saved_bytes(opt)
            return go

        run_threads([first(0), first(1)])
    ckpt, old_ckpt = (torch.load(io.BytesIO(saved[k]), weights_only=False) for k in (3, 2))
    assert (ckpt["revision"], old_ckpt["revision"]) == (3, 2)
    bits = {name: t.numpy().tobytes() for name, t in ckpt["shared"].items()}

    after_load, final = {}, {}
    with pcomm.Coordinator() as coord:  # the restart: 3 fresh processes' worth of peers
        def second(i):
            def go():
                with pcomm.Communicator(coord.address, timeout=30) as comm:
                    comm.connect()
                    comm.wait_for_peers(3)
                    model = make(100)  # fresh weights (the same on fresh peers), not the checkpoint's
                    if i == 2 and older:  # the constructor's shortcut for load_state_dict
                        opt = optimizer(model, comm, checkpoint=old_ckpt)
                    else:
                        opt = optimizer(model, comm)
                        if i == 1:
                            opt.load_state_dict(ckpt)  # torch style, right after construction
                    after_load[i] = (opt.outer_step, {n: t.numpy().tobytes() for n, t in opt.shared_state.tensors.items()},
                                     [p.detach().clone() for p in model.parameters()])
                    train(opt, model, i, 5)
                    final[i] = (opt.outer_step, b"".join(t.numpy().tobytes() for _, t in
                                                          sorted(opt.shared_state.tensors.items())))
            return go

        run_threads([second(0), second(1), second(2)])
    for i in range(3):
        assert after_load[i][0] == 3
        assert after_load[i][1] == bits, f"peer {i} did not take the checkpoint's exact bits"
    for a, b in zip(after_load[0][2], after_load[2][2]):
        assert torch.equal(a, b)  # the models start from θ_global too
    assert len({f for f in final.values()}) == 1 and final[0][0] == 5
