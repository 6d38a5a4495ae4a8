"""The lecture's training practices, shared by every reference classifier.

Inputs are normalised inside the model (a Rescaling or Normalization layer), so the saved model carries its own
preprocessing. Training uses exponential learning-rate decay, L2 on Dense kernels and dropout (in the builders),
early stopping on a validation split with the best weights restored, and fixed seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from effkit.load.classifier import describe, output_names
from effkit.load.data import Dataset
from effkit.techniques.train import FitResult, fit


@dataclass(frozen=True)
class TrainingPlan:
    """How a reference classifier is trained (its builder's companion); not an artifact plan."""

    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 2e-3
    decay_rate: float = 0.9
    patience: int = 5


def train(
    model: Any, dataset: Dataset, *, keras: Any, plan: TrainingPlan, label: str, loss_weights: dict | None = None
) -> FitResult:
    """Fit a freshly built reference model with its training plan."""
    info = describe(model, dataset.x_train[:8], name=label, labels=dataset.labels("train", output_names(model)))
    return fit(
        model,
        dataset,
        keras=keras,
        heads=info.heads,
        loss_weights=loss_weights,
        epochs=plan.epochs,
        batch_size=plan.batch_size,
        learning_rate=plan.learning_rate,
        decay_rate=plan.decay_rate,
        patience=plan.patience,
        label=label,
    )
