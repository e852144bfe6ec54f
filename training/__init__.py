"""streamguard training: fine-tunes FSFM on deepfake data sets and exports the engine
that the runtime loads. It reuses the runtime's face cropper and model code so that
training and serving see the same pixels. (Built in its own issue; empty for now.)"""
