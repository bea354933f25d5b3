"""The training job: fits a small numpy MLP that predicts the next bar's direction.

A real, deterministic job: features (returns, moving-average ratios, range, volume) from
OHLCV bars, a one-hidden-layer tanh network with a sigmoid output, full-batch gradient
descent with momentum. The same parameters and seed give bit-identical results, also
across a stop and a resume, because the checkpoint holds the weights, the optimiser's
velocities and the metrics so far. Bad input raises ``JobFailed`` with the reason; the
step loop (``ktrdr.jobs.step_loop``) turns it into a FAILED outcome.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from ktrdr.config import CheckpointSettings, DataSettings
from ktrdr.errors import BarsError, JobFailed
from ktrdr.jobs.bars import Bars, load_bars, moving_average
from ktrdr.protocol import (
    OperationType,
    Progress,
    TrainingParameters,
    describe_validation_error,
)

__all__ = ["FEATURE_NAMES", "TrainingJob", "features_and_targets", "predict_up_probability"]


FloatArray = npt.NDArray[np.float64]

FEATURE_NAMES = ("return_1", "return_5", "close_ma10", "close_ma20", "range", "volume_ma20")
#: Bars of history the features need before the first sample.
LOOKBACK = 20
MIN_BARS = 100
MOMENTUM = 0.9
VALIDATION_SHARE = 0.2
_EPS = 1e-12


def features_and_targets(bars: Bars) -> tuple[FloatArray, FloatArray]:
    """Feature rows for bars ``LOOKBACK..n-2`` and whether the following bar closed higher."""
    close, n = bars.close, len(bars)
    t = np.arange(LOOKBACK, n - 1)
    ma10 = moving_average(close, 10)
    ma20 = moving_average(close, 20)
    volume_ma20 = moving_average(bars.volume, 20)
    columns = (
        close[t] / close[t - 1] - 1.0,
        close[t] / close[t - 5] - 1.0,
        close[t] / ma10[t] - 1.0,
        close[t] / ma20[t] - 1.0,
        (bars.high[t] - bars.low[t]) / close[t],
        np.log((bars.volume[t] + 1.0) / (volume_ma20[t] + 1.0)),
    )
    x = np.column_stack(columns)
    y = (close[t + 1] > close[t]).astype(np.float64)
    return x, y


def _sigmoid(z: FloatArray) -> FloatArray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _forward(
    x: FloatArray, w1: FloatArray, b1: FloatArray, w2: FloatArray, b2: FloatArray
) -> tuple[FloatArray, FloatArray]:
    hidden = np.tanh(x @ w1 + b1)
    return hidden, _sigmoid(hidden @ w2 + b2[0])


def _loss_and_accuracy(p: FloatArray, y: FloatArray) -> tuple[float, float]:
    clipped = np.clip(p, _EPS, 1.0 - _EPS)
    loss = -float(np.mean(y * np.log(clipped) + (1.0 - y) * np.log(1.0 - clipped)))
    accuracy = float(np.mean((p > 0.5) == (y > 0.5)))
    return loss, accuracy


def predict_up_probability(model: Mapping[str, Any], bars: Bars) -> FloatArray:
    """Apply a trained model (a result's ``model``) to bars: P(next close is higher).

    One probability per bar from ``LOOKBACK`` to the second-to-last, aligned with
    :func:`features_and_targets`.
    """
    x, _ = features_and_targets(bars)
    mean = np.asarray(model["feature_mean"], dtype=np.float64)
    std = np.asarray(model["feature_std"], dtype=np.float64)
    _, p = _forward(
        (x - mean) / std,
        np.asarray(model["w1"], dtype=np.float64),
        np.asarray(model["b1"], dtype=np.float64),
        np.asarray(model["w2"], dtype=np.float64),
        np.asarray([model["b2"]], dtype=np.float64),
    )
    return p


@attrs.define(kw_only=True, eq=False)
class _Data:
    """Standardised training and validation samples."""

    x_train: FloatArray
    y_train: FloatArray
    x_valid: FloatArray
    y_valid: FloatArray
    mean: FloatArray
    std: FloatArray

    @classmethod
    def from_bars(cls, bars: Bars) -> _Data:
        x, y = features_and_targets(bars)
        split = round(x.shape[0] * (1.0 - VALIDATION_SHARE))
        mean = x[:split].mean(axis=0)
        std = x[:split].std(axis=0)
        std = np.where(std > 0, std, 1.0)
        x = (x - mean) / std
        return cls(
            x_train=x[:split],
            y_train=y[:split],
            x_valid=x[split:],
            y_valid=y[split:],
            mean=mean,
            std=std,
        )


_WEIGHTS = ("w1", "b1", "w2", "b2", "vw1", "vb1", "vw2", "vb2")
#: Per-epoch metrics, one value per epoch done (the series and the checkpoint keep them).
_HISTORY = ("losses", "accuracies", "validation_losses", "validation_accuracies")
#: What a checkpoint written before validation metrics were kept per epoch lacks.
_ADDED_LATER = frozenset({"validation_losses", "validation_accuracies"})
#: The series of a training run and the history each is read from.
SERIES = {
    "loss": "losses",
    "accuracy": "accuracies",
    "validation_loss": "validation_losses",
    "validation_accuracy": "validation_accuracies",
}


@attrs.define(kw_only=True, eq=False)
class _State:
    """Everything that changes during training: the checkpoint's content."""

    epoch: int
    w1: FloatArray
    b1: FloatArray
    w2: FloatArray
    b2: FloatArray
    vw1: FloatArray
    vb1: FloatArray
    vw2: FloatArray
    vb2: FloatArray
    losses: list[float]
    accuracies: list[float]
    validation_losses: list[float]
    validation_accuracies: list[float]

    @classmethod
    def initial(cls, *, n_features: int, hidden_units: int, seed: int) -> _State:
        rng = np.random.default_rng([seed, 1])
        w1 = rng.normal(0.0, 1.0 / math.sqrt(n_features), (n_features, hidden_units))
        w2 = rng.normal(0.0, 1.0 / math.sqrt(hidden_units), hidden_units)
        b1, b2 = np.zeros(hidden_units), np.zeros(1)
        return cls(
            epoch=0,
            w1=w1,
            b1=b1,
            w2=w2,
            b2=b2,
            vw1=np.zeros_like(w1),
            vb1=np.zeros_like(b1),
            vw2=np.zeros_like(w2),
            vb2=np.zeros_like(b2),
            losses=[],
            accuracies=[],
            validation_losses=[],
            validation_accuracies=[],
        )

    @classmethod
    def restore(cls, step: int, saved: Mapping[str, npt.NDArray[Any]]) -> _State:
        weights: dict[str, Any] = {name: np.asarray(saved[name], np.float64) for name in _WEIGHTS}
        history: dict[str, Any] = {}
        for name in _HISTORY:
            if name not in saved and name in _ADDED_LATER:
                history[name] = [math.nan] * step  # an older checkpoint: a gap in the series
                continue
            values = np.asarray(saved[name], np.float64)
            if values.shape != (step,):
                count = values.shape[0] if values.ndim else 0
                message = f"it records {count} {name.replace('_', ' ')} for epoch {step}"
                raise ValueError(message)
            history[name] = [float(v) for v in values]
        return cls(epoch=step, **weights, **history)

    def arrays(self) -> dict[str, FloatArray]:
        values = {name: getattr(self, name) for name in _WEIGHTS}
        for name in _HISTORY:
            values[name] = np.asarray(getattr(self, name), dtype=np.float64)
        return values

    def step(self, data: _Data, learning_rate: float) -> tuple[float, float]:
        """One epoch of full-batch gradient descent with momentum; returns loss, accuracy.

        The epoch's metrics (training and validation) are those of the weights it
        started from, the ones its gradient was computed with.
        """
        x, y = data.x_train, data.y_train
        hidden, p = _forward(x, self.w1, self.b1, self.w2, self.b2)
        loss, accuracy = _loss_and_accuracy(p, y)
        _, p_valid = _forward(data.x_valid, self.w1, self.b1, self.w2, self.b2)
        validation_loss, validation_accuracy = _loss_and_accuracy(p_valid, data.y_valid)
        dz2 = (p - y) / x.shape[0]
        grads = {
            "w2": hidden.T @ dz2,
            "b2": np.array([dz2.sum()]),
        }
        dz1 = np.outer(dz2, self.w2) * (1.0 - hidden**2)
        grads["w1"] = x.T @ dz1
        grads["b1"] = dz1.sum(axis=0)
        for name, grad in grads.items():
            velocity = MOMENTUM * getattr(self, "v" + name) - learning_rate * grad
            setattr(self, "v" + name, velocity)
            setattr(self, name, getattr(self, name) + velocity)
        self.epoch += 1
        self.losses.append(loss)
        self.accuracies.append(accuracy)
        self.validation_losses.append(validation_loss)
        self.validation_accuracies.append(validation_accuracy)
        return loss, accuracy


class TrainingJob:
    """Training operations: an epoch is one step, checkpointed every ``epoch_interval``."""

    operation_type = OperationType.TRAINING
    unit = "epoch"

    def checkpoint_every(self, settings: CheckpointSettings) -> int:
        """``KTRDR_CHECKPOINT_EPOCH_INTERVAL``."""
        return settings.epoch_interval

    def prepare(self, parameters: Mapping[str, Any], data: DataSettings) -> _TrainingRun:
        """Validate the parameters and load the bars (from ``data.dir``); raises ``JobFailed``."""
        params = _parameters(parameters)
        try:
            bars = load_bars(
                csv_path=params.csv_path,
                count=params.bars,
                seed=params.seed,
                min_bars=MIN_BARS,
                data=data,
            )
        except BarsError as exc:
            raise JobFailed(str(exc)) from None
        return _TrainingRun(params=params, bars=bars)


class _TrainingRun:
    """One training operation: its parameters and standardised samples."""

    def __init__(self, *, params: TrainingParameters, bars: Bars) -> None:
        self.params = params
        self.data = _Data.from_bars(bars)
        self.bar_count = len(bars)
        self.total = params.epochs
        self.fingerprint: Mapping[str, Any] = {
            "parameters": params.model_dump(mode="json"),
            "bars": bars.fingerprint(),
        }

    def initial_state(self) -> _State:
        return _State.initial(
            n_features=len(FEATURE_NAMES),
            hidden_units=self.params.hidden_units,
            seed=self.params.seed,
        )

    def restore(self, step: int, arrays: Mapping[str, npt.NDArray[Any]]) -> _State:
        return _State.restore(step, arrays)

    def position(self, state: _State) -> int:
        return state.epoch

    def step(self, state: _State) -> bool:
        loss, _ = state.step(self.data, self.params.learning_rate)
        if not math.isfinite(loss):
            message = f"training diverged at epoch {state.epoch}; lower learning_rate"
            raise JobFailed(message)
        return True

    def arrays(self, state: _State) -> dict[str, npt.NDArray[Any]]:
        return dict(state.arrays())

    def progress(self, state: _State, message: str) -> Progress:
        return _progress(state, self.params, message)

    def series_at(self, state: _State, step: int) -> dict[str, float]:
        """Loss and accuracy (training and validation) of epoch ``step``."""
        return {name: getattr(state, history)[step - 1] for name, history in SERIES.items()}

    def result(self, state: _State) -> dict[str, Any]:
        return _result(state, self.data, self.params, self.bar_count)


def _parameters(raw: Mapping[str, Any]) -> TrainingParameters:
    try:
        return TrainingParameters.model_validate(dict(raw))
    except ValidationError as exc:
        raise JobFailed(f"invalid training parameters: {describe_validation_error(exc)}") from None


def _progress(state: _State, params: TrainingParameters, message: str) -> Progress:
    details: dict[str, Any] = {"epoch": state.epoch, "epochs": params.epochs}
    if state.losses:
        details["loss"] = state.losses[-1]
        details["accuracy"] = state.accuracies[-1]
    percent = 100.0 * state.epoch / params.epochs
    return Progress(percent=percent, message=message, details=details)


def _result(
    state: _State, data: _Data, params: TrainingParameters, bar_count: int
) -> dict[str, Any]:
    _, p_train = _forward(data.x_train, state.w1, state.b1, state.w2, state.b2)
    loss, accuracy = _loss_and_accuracy(p_train, data.y_train)
    _, p_valid = _forward(data.x_valid, state.w1, state.b1, state.w2, state.b2)
    valid_loss, valid_accuracy = _loss_and_accuracy(p_valid, data.y_valid)
    return {
        "symbol": params.symbol,
        "epochs": state.epoch,
        "bars": bar_count,
        "samples": int(data.x_train.shape[0] + data.x_valid.shape[0]),
        "initial_loss": state.losses[0],
        "final_loss": loss,
        "accuracy": accuracy,
        "validation_loss": valid_loss,
        "validation_accuracy": valid_accuracy,
        "model": {
            "kind": "mlp",
            "features": list(FEATURE_NAMES),
            "feature_mean": data.mean.tolist(),
            "feature_std": data.std.tolist(),
            "w1": state.w1.tolist(),
            "b1": state.b1.tolist(),
            "w2": state.w2.tolist(),
            "b2": float(state.b2[0]),
        },
    }
