"""FusionSurvival's training: the stages, the closed-form fits and the clinical weight search.

Closed-form parts (the ridge Cox start of the clinical linear term, the
late-fusion FC, the chosen clinical weight of the alpha-model) are fitted here
and written into the network through its own setters (``set_clinical_linear``,
``set_late_weights``, ``set_clinical_weight``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from skorch.callbacks import EarlyStopping, LRScheduler

from fracsurv._base import survival_arrays
from fracsurv.nn.base import IMAGE_INFERENCE_SCALE
from fracsurv.nn.splits import EventStratifiedSplit
from fracsurv.survival._fusion_nets import FusionCoxLoss, FusionNet
from fracsurv.survival.callbacks import ValidCIndex
from fracsurv.survival.deepsurv import survival_target_tensor
from fracsurv.survival.fusion.data import FusionImages
from fracsurv.survival.loss import fit_ridge_cox

__all__ = ["FitData", "FusionTrainingMixin"]

_MIN_HEAD_EVENTS = 20  # held-out events needed to fit the late-fusion FC on them alone


@dataclass(frozen=True)
class FitData:
    """What the training steps of one ``fit`` read.

    Attributes
    ----------
    ds : FusionImages
        The training rows' streaming dataset (images, standardised clinical
        inputs, targets).
    X : DataFrame
        The frame ``fit`` was given.
    tab : ndarray of shape (n, p)
        Its clinical matrix (not standardised).
    y : structured ndarray
        The survival target.
    split_seed : int
        Seed of the one inner validation split every stage uses.
    """

    ds: FusionImages
    X: pd.DataFrame
    tab: np.ndarray
    y: np.ndarray
    split_seed: int


class FusionTrainingMixin:
    """The methods of :class:`FusionSurvival` that build and train its network."""

    def _build_module(self, clinical_weight: float) -> FusionNet:
        return FusionNet(self.fusion, self.backbone, self.n_channels_, self.input_shape_,
                         len(self.tabular_columns_), self._hidden_units(), float(self.dropout),
                         clinical_weight, bool(self.linear_skip), aux_levels=int(self.aux_levels_),
                         aux_per_crop=bool(self.aux_per_crop_),
                         shared_crops=self.image_input == "crops" and self.crop_encoder == "shared",
                         crop_pool=str(self.crop_pool), aux_risk=str(self.aux_risk))

    def _callbacks(self, epochs: int) -> list[Any]:
        cbs: list[Any] = []
        if self.validation_fraction:
            cbs.append(ValidCIndex())
            if int(self.patience):
                cbs.append(EarlyStopping(monitor="valid_cindex", lower_is_better=False,
                                         patience=int(self.patience), load_best=True,
                                         threshold=0.0, threshold_mode="abs"))
        if self.scheduler == "cosine" and epochs > 1:
            cbs.append(LRScheduler("CosineAnnealingLR", T_max=epochs,
                                   eta_min=0.1 * float(self.lr)))
        return cbs

    def on_stage_begin(self, module: FusionNet, stage: str, frozen: tuple[str, ...]) -> None:
        """Hook called as each training stage begins; does nothing here.

        Subclasses may override it to observe (or adjust) the network just
        before a stage trains, e.g. to record the weights a pre-trained part
        enters the fusion stage with. It runs once per trained stage, after the
        stage is set and its parts frozen, before the first epoch; parts
        fitted in closed form (a linear clinical branch with
        ``linear_init="cox"``, the late-fusion FC, a search over frozen
        sub-models) have no training stage and no call.

        Parameters
        ----------
        module : FusionNet
            The network being trained (``module_`` once ``fit`` returns).
        stage : {"tabular", "image", "fusion"}
            A sub-model alone (its pre-training) or the whole fusion model.
        frozen : tuple of str
            The sub-modules kept frozen in this stage.
        """

    def _train_stage(self, module: FusionNet, stage: str, frozen: tuple[str, ...],
                     ds: FusionImages, split_seed: int, events: np.ndarray) -> Any:
        module.stage = stage
        module.freeze(frozen)
        self.on_stage_begin(module, stage, frozen)
        epochs = int(self.max_epochs)
        aux_w = float(self.aux_weight) if self.aux_column is not None else 0.0
        net = self._make_net(module, FusionCoxLoss(self.ties, aux_w), n_train=len(ds),
                             # early stopping on the validation C-index, in _callbacks
                             callbacks=self._callbacks(epochs), early_stopping=False,
                             iterator_kwargs={"num_workers": int(self.num_workers)})
        if self.validation_fraction:
            net.train_split = self._splitter(events, split_seed)
        ds.skip_images = stage == "tabular"
        try:
            self._fit_net(net, ds)
        finally:
            ds.skip_images = False
        self.histories_.append({"stage": stage, "frozen": list(frozen),
                                "history": net.history.to_list()})
        return net

    def _splitter(self, events: np.ndarray, split_seed: int) -> EventStratifiedSplit:
        return EventStratifiedSplit(float(self.validation_fraction), events, split_seed,
                                    owner=type(self).__name__)

    def _valid_rows(self, y: np.ndarray, split_seed: int) -> np.ndarray:
        """Row positions of the inner validation split (the same one skorch uses)."""
        return self._split_rows(y, split_seed)[1]

    def _split_rows(self, y: np.ndarray, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(training, validation) row positions of the inner split, stratified on the
        events of ``y``; all rows both ways without one."""
        if not self.validation_fraction:
            return np.arange(len(y)), np.arange(len(y))
        return self._splitter(survival_arrays(y)[0], split_seed).rows()

    def _exact_clinical(self) -> bool:
        """A linear clinical branch started at its exact fit needs no training stage."""
        return self.linear_init == "cox" and not self._hidden_units()

    def _init_clinical_linear(self, module: FusionNet, data: FitData) -> None:
        """``linear_init="cox"``: start the clinical linear term at the ridge Cox fit.

        Fitted on the training rows of the inner split (never the validation
        rows), on the standardised inputs the branch sees; the branch's other
        risk head is zeroed, so the clinical risk starts as exactly that
        linear Cox model and an MLP only learns what it misses.
        """
        if self.linear_init != "cox" or module.clinical_linear() is None:
            return
        ds = data.ds
        rows = self._split_rows(data.y, data.split_seed)[0]
        t = torch.as_tensor(survival_target_tensor(data.y, np.float64)[rows])
        w = fit_ridge_cox(torch.as_tensor(ds.tabular[rows]), t[:, 0], t[:, 1], ties=self.ties)
        module.set_clinical_linear(w)

    def _seeded_module(self, clinical_weight: float) -> FusionNet:
        self._seed()
        return self._build_module(clinical_weight)

    def _fit_stages(self, module: FusionNet, data: FitData) -> None:
        ds, split_seed = data.ds, data.split_seed
        events = survival_arrays(data.y)[0]
        self._init_clinical_linear(module, data)
        parts = self._pretrain_parts()
        for part in parts:  # each sub-model alone, on its own risk head
            if part == "tabular" and self._exact_clinical():
                self.histories_.append({"stage": "tabular", "frozen": [], "history": [],
                                        "solver": "ridge Cox, full batch (linear_init='cox')"})
                continue
            others = tuple(p for p in ("image", "tabular", "fuse", "aux_head")
                           if p != part and not (part == "image" and p == "aux_head"))
            self._train_stage(module, part, others, ds, split_seed, events)
        frozen = parts if self.freeze_pretrained else ()
        if self.fusion == "late" and set(parts) == {"image", "tabular"}:
            self.module_ = module
            self._fit_late_head(module, data)
            if self.freeze_pretrained:
                module.stage = "fusion"
                module.freeze(())
                return
        if set(frozen) >= {"image", "tabular"} and self.fusion == "alpha":
            module.stage = "fusion"
            module.freeze(())
            self.module_ = module
            return  # nothing left to train
        self._train_stage(module, "fusion", tuple(frozen), ds, split_seed, events)
        module.freeze(())

    def _fit_late_head(self, module: FusionNet, data: FitData) -> None:
        """Fit the late-fusion FC as a 2-covariate Cox model on the frozen sub-models' risks.

        ``head_rows="validation"``: the risks are those of the inner
        validation rows, which neither sub-model trained on (fitted on training
        rows, the FC favours whichever sub-model overfits more), when they hold at
        least 20 events; otherwise every row. ``"all"``: every row.
        """
        X, tab = data.X, data.tab
        target = survival_target_tensor(data.y, np.float64)
        rows = self._valid_rows(data.y, data.split_seed)
        if self.head_rows == "all" or target[rows, 1].sum() < _MIN_HEAD_EVENTS:
            rows = np.arange(len(X))
        risks = torch.as_tensor(self._sub_risks(X.iloc[rows], tab[rows]), dtype=torch.float64)
        scale = risks.std(0).clamp_min(1e-6)
        t = torch.as_tensor(target[rows])
        w = fit_ridge_cox((risks - risks.mean(0)) / scale, t[:, 0], t[:, 1], ties=self.ties)
        module.set_late_weights(w / scale)

    def _sub_risks(self, X: pd.DataFrame, tab: np.ndarray) -> np.ndarray:
        ds = self._dataset(X, tab)
        return self._batched(ds, lambda m, b: m.risks(**b)).reshape(-1, 2).astype(np.float64)

    def _search_clinical_weight(self, data: FitData) -> float:
        """One model per clinical weight on the same inner split; keep the best
        validation C-index.

        Returns the chosen weight.
        """
        best: tuple[float, FusionNet, list[dict[str, Any]], float] | None = None
        scores: dict[float, float] = {}
        if not self.validation_fraction:
            raise ValueError("clinical_weight='search' needs an inner validation split "
                             "(validation_fraction > 0)")
        if set(self._pretrain_parts()) == {"image", "tabular"} and self.freeze_pretrained:
            return self._search_clinical_weight_frozen(data)
        for a in self._clinical_weight_grid():
            self.histories_ = []
            module = self._seeded_module(a)
            self._fit_stages(module, data)
            hist = self.histories_[-1]["history"] if self.histories_ else []
            vals = [h.get("valid_cindex") for h in hist if h.get("valid_cindex") is not None]
            score = float(max(vals)) if vals else float("nan")
            scores[a] = score
            if best is None or (np.isfinite(score) and score > best[0]):
                best = (score, module, self.histories_, a)
        assert best is not None
        self.module_ = best[1]
        self.histories_ = best[2]
        self.clinical_weight_scores_ = scores
        return best[3]

    def _search_clinical_weight_frozen(self, data: FitData) -> float:
        """Clinical weight search over frozen pre-trained sub-models: they do not
        depend on the weight, so they are trained once and every weight is scored by
        the C-index of the same risks (of the validation rows, or of every row with
        ``head_rows="all"``): one training instead of one per grid value."""
        from fracsurv.metrics import concordance_index

        grid = self._clinical_weight_grid()
        self.histories_ = []
        module = self._seeded_module(grid[0])
        self._fit_stages(module, data)
        X, tab, y = data.X, data.tab, data.y
        rows = (np.arange(len(X)) if self.head_rows == "all"
                else self._valid_rows(y, data.split_seed))
        risks = self._sub_risks(X.iloc[rows], tab[rows])
        has_events = bool(survival_arrays(y[rows])[0].any())
        scores = {a: concordance_index(y[rows], a * risks[:, 0] + (1 - a) * risks[:, 1])
                  if has_events else float("nan") for a in grid}
        finite = {a: v for a, v in scores.items() if np.isfinite(v)}
        best = max(finite, key=finite.get) if finite else grid[0]
        module.set_clinical_weight(best)
        self.module_ = module
        self.clinical_weight_scores_ = scores
        return best

    # -- inference -------------------------------------------------------------
    def _batched(self, ds: FusionImages, forward: Any) -> np.ndarray:
        def batch(rows: range) -> dict[str, torch.Tensor]:
            return {"image": torch.stack([ds.load(j) for j in rows]),
                    "tabular": torch.from_numpy(ds.tabular[list(rows)])}

        return self._predict_batches(len(ds), batch, scale=IMAGE_INFERENCE_SCALE, forward=forward)

    def _raw_predict(self, X: pd.DataFrame, tab: np.ndarray) -> np.ndarray:
        ds = self._dataset(X, tab)
        return self._batched(ds, lambda m, b: m(**b)).reshape(-1).astype(np.float64)
