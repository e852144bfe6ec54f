"""streamguard: real-time deepfake detection for live video.

Frames come in from live sources, faces are found and tracked, the FSFM ViT scores
each face crop, a sliding window per identity turns scores into verdicts, and
verdicts go out as versioned JSON events on Redis.
"""

__version__ = "0.1.0"
