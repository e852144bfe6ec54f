"""Scoring face crops: the engine contract, the registry that opens an engine file
with its backend, and the micro-batcher that shares one engine among all streams."""

from streamguard.inference.batcher import BatcherClosed, CropsDropped, EngineFailed, MicroBatcher
from streamguard.inference.contract import Engine, check_crops
from streamguard.inference.registry import BACKENDS, open_engine

__all__ = ["BACKENDS", "BatcherClosed", "CropsDropped", "Engine", "EngineFailed", "MicroBatcher", "check_crops", "open_engine"]
