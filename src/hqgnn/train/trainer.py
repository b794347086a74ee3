"""The training loop: BPR + Adam through the (optional) quantizer, validation, early stopping, resume."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..config import RunConfig
from ..data.dataset import InteractionData
from ..device import resolve_device as resolve_device  # also re-exported: hqgnn.train.trainer.resolve_device
from ..errors import HqgnnError
from ..eval import RankingEvaluator
from ..graph import normalized_adjacency
from ..progress import Heartbeat, epochs_eta
from ..index.format import CodeFormat
from ..io import atomic_path
from ..models import HQGNNModel
from ..quant.schedule import DeltaSchedule
from . import distributed
from .cuda_graph import GraphedStep
from .checkpoint import load_checkpoint, save_checkpoint
from .sampler import BPRSampler
from .schedule import check_schedule, current_lr, lr_factor, make_lr, set_lr
from .warm_start import init_learnable_scales, set_teacher, warm_start

log = logging.getLogger("hqgnn.train")

CHECKPOINT = "checkpoint.safetensors"
BEST = "best.safetensors"


@dataclass
class TrainResult:
    best_epoch: int
    epochs_run: int
    train_seconds: float
    val: dict[str, float]
    test: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    memory: dict[str, float] = field(default_factory=dict)
    warm_start_val: dict[str, float] = field(default_factory=dict)  # the init_from run quantized, before training


class Trainer:
    """Trains a :class:`HQGNNModel` on ``data`` as ``cfg`` says; ``fit`` writes checkpoints to a run dir."""

    def __init__(
        self,
        cfg: RunConfig,
        data: InteractionData,
        progress: bool = True,
        on_epoch_end: Callable[[int], None] | None = None,
    ) -> None:
        self.cfg, self.data = cfg.validate(), data
        self.device = distributed.local_device(resolve_device(cfg.train.device))
        self.progress = progress and distributed.is_main()
        self.on_epoch_end = on_epoch_end
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(cfg.train.seed)
        self.adj = normalized_adjacency(data.train, data.n_users, data.n_items, self.device) if cfg.model.layers else None
        with torch.random.fork_rng(devices=[]):  # seeded init without reseeding the caller's global RNG
            torch.manual_seed(cfg.train.seed)
            self.model = HQGNNModel(data.n_users, data.n_items, cfg.model, cfg.quant if cfg.quant.bits else None)
        self.model.set_objective(cfg.train.loss, cfg.train.temperature)
        self.model.to(self.device)
        if cfg.train.init_from:
            self.init_info = warm_start(self.model, self.adj, cfg, Path(cfg.train.init_from))
        elif self.model.quantized and cfg.quant.rotation != "none":
            raise HqgnnError(f"quant.rotation={cfg.quant.rotation} is fitted on a trained model: it needs train.init_from")
        if self.model.quantized and cfg.quant.distill != "none":
            set_teacher(self.model, cfg, Path(cfg.quant.teacher or cfg.train.init_from or ""), data, self.device)
        if self.model.quantized and cfg.quant.learnable_scale and not cfg.train.init_from:
            init_learnable_scales(self.model, self.adj)
        # the fused CUDA Adam is one kernel for all parameters: a visible share of a ~1 ms step
        cuda = self.device.type == "cuda"
        # distributed: DDP's all-reduce is not captured into the graph, so eager steps only
        self.use_graph = cuda and cfg.train.cuda_graph and not distributed.is_active()
        self.graphed_step: GraphedStep | None = None
        # graphed: a tensor lr on the device, which the schedule changes in place (schedule.make_lr)
        lr = make_lr(cfg.train.lr, self.device, tensor=self.use_graph)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr, fused=cuda, capturable=self.use_graph)
        self.lr_tensor = lr if torch.is_tensor(lr) else None
        self.lr_trace: list[float] | None = None  # refit: replay these per-epoch lrs instead of the schedule
        # refit: also rank TEST every this many epochs, for the paper-protocol row only (selects nothing;
        # its time is taken out of train_seconds)
        self.test_curve_every = 0
        check_schedule(cfg.train)
        self.delta_schedule = DeltaSchedule(cfg.quant, self.model.quantized)
        self.paper = cfg.train.protocol == "paper"
        if self.paper and len(data.val):
            raise HqgnnError("train.protocol=paper trains on all of train.txt: set data.val_ratio=0")
        self.sampler = BPRSampler(data.train, data.n_users, data.n_items, self.device, self.generator,
                                  mode=cfg.train.sampling, negatives=cfg.train.negatives)
        # under torchrun: each rank takes its slice of every global batch, DDP averages the gradients
        self.ddp = distributed.wrap_model(self.model, self.adj, self.device) if distributed.is_active() else None
        dist_eval = distributed.is_active()
        ks = cfg.eval.ks
        eb = cfg.train.eval_batch_size
        self.val_eval = (  # the train matrix only when there is a validation split (a copy of 12 B per pair)
            RankingEvaluator(data.matrix(data.val), data.matrix(data.train), ks, self.device, eb, distributed=dist_eval,
                             max_users=cfg.eval.max_users, seed=cfg.train.seed)
            if len(data.val) else None
        )
        self.test_eval = RankingEvaluator(data.matrix(data.test), data.matrix(data.seen), ks, self.device, eb,
                                          distributed=dist_eval, max_users=cfg.eval.max_users, seed=cfg.train.seed)
        # paper protocol: the epoch is selected on TEST (as published tables do); history keys say so
        self.select_prefix = "test_selected_" if self.paper else "val_"
        if self.paper:
            self.val_eval = self.test_eval

    init_info: dict[str, Any] = {}  # what --init-from loaded (path, epoch, shapes); empty without it

    # -- pieces -------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, split: str = "test") -> dict[str, float]:
        """Ranked by the serving path (:class:`hqgnn.eval.ranking.Ranker`), so served metrics agree exactly."""
        ev = self.test_eval if split == "test" else self.val_eval
        if ev is None:
            return {}
        from ..eval.ranking import Ranker

        self.model.eval()
        if self.model.quantized:
            tables = self.model.codes(self.adj)
        else:
            users, items = self.model.final(self.adj)
            tables = {"user_emb": users, "item_emb": items}
        fmt = (CodeFormat.from_config(self.cfg.quant, dim=int(tables["item_codes"].shape[1]),
                                      term="item_term" in tables) if self.model.quantized else None)
        return ev.evaluate_ranker(Ranker(tables, fmt, self.device))

    def estimate_delta(self) -> dict[str, float]:
        """Refresh GSTE's delta now (see :class:`hqgnn.quant.schedule.DeltaSchedule`)."""
        return self.delta_schedule.refresh(self.model, self.adj, self.sampler, self.cfg.train.batch_size,
                                           self.generator, self.device)

    def train_epoch(self, epoch: int) -> float:
        self.model.train()
        bs, reg = self.cfg.train.batch_size, self.cfg.train.reg
        total = torch.zeros((), device=self.device)
        n_batches = self.sampler.n_batches(bs)
        bar = tqdm(total=n_batches, desc=f"epoch {epoch}", leave=False, disable=not self.progress, mininterval=0.5)
        beat = Heartbeat(f"epoch {epoch} batches", n_batches, log)  # no terminal: a line at least every 30 s
        done = 0
        for users, pos, neg in self.sampler.epoch(bs):
            if self.use_graph and len(users) < bs and done:
                break  # graph replays need full batches; the few leftover triples are resampled next epoch
            if self.use_graph and self.graphed_step is None:
                self._capture((users, pos, neg))
            if self.graphed_step is not None:
                total += self.graphed_step(users, pos, neg)
            else:
                if self.ddp is not None:  # this rank's scaled share of the global batch loss
                    loss = self.ddp(users, pos, neg, reg)
                else:
                    loss, _ = self.model.bpr_loss(self.adj, users, pos, neg, reg)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                total += loss.detach()
            done += 1
            bar.update(1)
            beat.tick(done, loss=lambda: float(total) / done)
        bar.close()
        # ranks hold shares of each batch loss: their sum over ranks / W is the global batch loss
        return float(distributed.all_reduce_sum(total)) / distributed.world_size() / max(1, done)

    def _capture(self, example: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
        try:
            self.graphed_step = GraphedStep(self.model, self.optimizer, self.adj, self.cfg.train.reg, example)
        except Exception as exc:  # an op that cannot be captured: train eagerly instead
            log.warning("CUDA graph capture failed (%s); training without graphs", str(exc).splitlines()[0])
            self.use_graph = False
            self.graphed_step = None

    # -- the loop -------------------------------------------------------------------------------
    def fit(self, run_dir: str | Path, resume: bool = False) -> TrainResult:
        run_dir = Path(run_dir)
        main = distributed.is_main()  # only rank 0 writes; every rank reads the checkpoint on resume
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
        tc = self.cfg.train
        state: dict[str, Any] = {"epoch": 0, "best_epoch": 0, "best_score": -math.inf, "best_val": {},
                                 "bad_evals": 0, "train_seconds": 0.0, "history": [], "stopped": False}
        ckpt = run_dir / CHECKPOINT
        if resume:
            if not ckpt.exists():
                raise HqgnnError(f"{ckpt}: no checkpoint to resume from")
            try:
                state = load_checkpoint(ckpt, self.model, self.optimizer, self.generator)
            except Exception as exc:  # a damaged or foreign checkpoint: one line, the run directory untouched
                first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
                raise HqgnnError(f"{ckpt}: cannot resume from this checkpoint ({type(exc).__name__}: {first})") from None
            if self.lr_tensor is not None:  # load_state_dict put a float lr back: keep the graphed tensor
                for group in self.optimizer.param_groups:
                    group["lr"] = self.lr_tensor
            log.info("resumed from epoch %d", state["epoch"])
        if not resume and tc.init_from and self.val_eval is not None:
            # the warm start is a candidate too (epoch 0): its codes are the float run quantized post hoc by this
            # run's quantizer, so training that never beats them on validation keeps them (and epochs = 0 is
            # post-hoc quantization, selected and reported like any run)
            val = self.evaluate("val")
            state.update(best_score=val.get(tc.select_metric, -math.inf), best_val=val, warm_start_val=val)
            log.info("warm start (epoch 0): %s %s %.4f", "TEST (paper protocol)" if self.paper else "val",
                     tc.select_metric, state["best_score"])
            if main:
                self._save_weights(run_dir / BEST)
        t_start = time.perf_counter() - state["train_seconds"]
        # epochs between evaluations: a line at least every 30 s when no terminal shows the bars
        epoch_beat = Heartbeat("epochs", tc.epochs, log, start=t_start)
        for epoch in range(state["epoch"], tc.epochs):
            if state["stopped"]:
                break
            entry: dict[str, Any] = {"epoch": epoch + 1}
            if self.delta_schedule.due(epoch):
                est = self.estimate_delta()
                entry.update({f"gste_{k}": v for k, v in est.items()})
                log.info("epoch %d: GSTE delta=%.4g (Hessian trace %.4g, std(g) %.3g, %d probes)",
                         epoch + 1, est["delta"], est["trace"], est["grad_std"], est["probes"])
            if self.lr_trace is not None:
                lr = self.lr_trace[min(epoch, len(self.lr_trace) - 1)]
            else:
                elapsed = time.perf_counter() - t_start
                if tc.max_seconds > 0 and distributed.is_active():  # one clock for all ranks: the same lr
                    t = torch.tensor(elapsed, dtype=torch.float64, device=self.device)
                    elapsed = float(distributed.all_reduce_sum(t)) / distributed.world_size()
                lr = tc.lr * lr_factor(tc, epoch, elapsed)
            set_lr(self.optimizer, lr)  # in place before the epoch's first step (graph replays read it)
            entry["lr"] = current_lr(self.optimizer)
            t0 = time.perf_counter()
            entry["loss"] = self.train_epoch(epoch + 1)
            self._check_finite(epoch + 1, entry["loss"], ckpt)  # before this epoch's checkpoint can be written
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            entry["epoch_seconds"] = time.perf_counter() - t0
            over_budget = tc.max_seconds > 0 and time.perf_counter() - t_start >= tc.max_seconds
            if tc.max_seconds > 0:
                over_budget = distributed.any_rank(over_budget)  # clocks differ: stop together
            last = epoch + 1 == tc.epochs or over_budget
            state["stopped"] = state["stopped"] or over_budget
            evaluated = (epoch + 1) % max(1, tc.eval_every) == 0 or last
            if evaluated:
                val = self.evaluate("val")
                entry.update({f"{self.select_prefix}{k}": v for k, v in val.items()})
                score = val.get(tc.select_metric, -entry["loss"])
                if score > state["best_score"]:
                    state.update(best_score=score, best_epoch=epoch + 1, best_val=val, bad_evals=0)
                    if main:
                        self._save_weights(run_dir / BEST)
                else:
                    state["bad_evals"] += 1
                eta = epochs_eta(epoch + 1, tc.epochs, time.perf_counter() - t_start, tc.max_seconds)
                if not val:  # no validation split (refit): the last epoch is what is kept
                    log.info("epoch %d/%d: loss %.4f  (%.2fs/epoch, ETA %s)", epoch + 1, tc.epochs, entry["loss"],
                             entry["epoch_seconds"], eta)
                else:
                    log.info("epoch %d/%d: loss %.4f  %s %s %.4f  (best %.4f @ %d, %.2fs/epoch, ETA %s)", epoch + 1,
                             tc.epochs, entry["loss"], "TEST (paper protocol, test-selected)" if self.paper else "val",
                             tc.select_metric, score, state["best_score"], state["best_epoch"], entry["epoch_seconds"],
                             eta)
                epoch_beat.last = time.perf_counter()
                if tc.patience and state["bad_evals"] >= tc.patience:  # bad_evals moves only here
                    log.info("early stop: no improvement in %d evaluations", tc.patience)
                    state["stopped"] = True
            else:
                epoch_beat.tick(epoch + 1, loss=entry["loss"],
                                best=lambda: f"{state['best_score']:.4f} @ {state['best_epoch']}"
                                if state["best_epoch"] else "not evaluated yet")
            if self.test_curve_every and ((epoch + 1) % self.test_curve_every == 0 or last):
                t_test = time.perf_counter()
                entry.update({f"test_curve_{k}": v for k, v in self.evaluate("test").items()})
                t_start += time.perf_counter() - t_test  # reporting only: not training time
            entry["elapsed_seconds"] = time.perf_counter() - t_start
            state["history"].append(entry)
            state["epoch"] = epoch + 1
            state["train_seconds"] = time.perf_counter() - t_start
            if main and (evaluated or state["stopped"]):  # every evaluation, with or without a validation split
                save_checkpoint(ckpt, self.model, self.optimizer, self.generator, state)
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch + 1)
            if over_budget:
                log.info("stopping: training budget of %.0fs reached", tc.max_seconds)
                break
        train_seconds = time.perf_counter() - t_start
        if main and (run_dir / BEST).exists():
            self.model.load_state_dict(load_file(str(run_dir / BEST)))
        distributed.broadcast_module(self.model)  # rank 0's best weights to every rank (no shared disk needed)
        test = self.evaluate("test")
        return TrainResult(best_epoch=state["best_epoch"], epochs_run=state["epoch"], train_seconds=train_seconds,
                           val=state["best_val"], test=test, history=state["history"], memory=self.model.memory_report(),
                           warm_start_val=state.get("warm_start_val", {}))

    def _check_finite(self, epoch: int, loss: float, ckpt: Path) -> None:
        """Stop at the first epoch whose loss or weights are not finite (diverged training), with one line.

        Checked before the epoch's checkpoint, so the last good checkpoint stays; no finished run is
        written (its scores would all be NaN / -inf and every list empty). One min / max reduction per
        parameter tensor (a handful; NaN propagates through both): no element-wise temporary, which for the
        100M-interaction tables would be a ~1 GB boolean copy on the card every epoch.
        """
        bad = None if math.isfinite(loss) else f"the training loss is {loss}"
        if bad is None:
            with torch.no_grad():
                for name, p in self.model.named_parameters():
                    if p.numel() and not bool(torch.isfinite(torch.stack(torch.aminmax(p.detach()))).all()):
                        bad = f"parameter {name} holds non-finite values"
                        break
        if bad is None:
            return
        kept = f"the last good checkpoint {ckpt} is kept" if ckpt.exists() else "no checkpoint was written yet"
        raise HqgnnError(f"epoch {epoch}: training diverged ({bad}); the learning rate is the likely cause: "
                         f"lower train.lr (now {self.cfg.train.lr:g}); {kept}, no finished run was written")

    def _save_weights(self, path: Path) -> None:
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp))
