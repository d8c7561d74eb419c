"""Detectors: the stages that read traces and report detections."""

from safepath.detectors.base import DETECTORS, Detector, build_detector, warm_up

__all__ = ["DETECTORS", "Detector", "build_detector", "warm_up"]
