"""Scoring face crops: model backends behind one `Engine` interface, and the
micro-batcher that shares one engine among all streams."""

from streamguard.inference.batcher import BatcherClosed, CropsDropped, EngineFailed, MicroBatcher
from streamguard.inference.engine import OPENERS, Engine, check_crops, open_engine

__all__ = ["OPENERS", "BatcherClosed", "CropsDropped", "Engine", "EngineFailed", "MicroBatcher", "check_crops", "open_engine"]
