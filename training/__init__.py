"""streamguard training: fine-tunes FSFM on deepfake data sets and exports the engine
that the runtime loads. It reuses the runtime's face detector, cropper and model code
so that training and serving see the same pixels.

`_torchvision_compat` is imported first, as in `streamguard.model`: most modules here
import timm, which imports torchvision, which fails beside the CPU torch build unless
the compat module has run.
"""

import streamguard._torchvision_compat  # noqa: F401  (must precede timm)
