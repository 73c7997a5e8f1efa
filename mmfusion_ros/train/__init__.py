"""Training of the fusion network on simulator scenes: ``mmfusion train``."""

from __future__ import annotations

from .config import DEFAULT_TRAIN_CONFIG, AugmentConfig, DataConfig, DropoutConfig, LossConfig, TrainConfig, load_train_config

__all__ = ['DEFAULT_TRAIN_CONFIG', 'AugmentConfig', 'DataConfig', 'DropoutConfig', 'LossConfig', 'TrainConfig',
           'load_train_config']
