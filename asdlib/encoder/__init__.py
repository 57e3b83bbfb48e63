"""BEATs audio encoder, written from the published architecture, checkpoint-compatible.

Loads the official BEATs checkpoints (``BEATs_iter3.pt``, ``BEATs_iter3_plus_AS2M.pt``,
AS2M fine-tuned ones with a predictor) with strict key matching, reads every setting from
the checkpoint's ``cfg`` and saves back in the same format, so the official code can load
what this package writes.

Differences from the official implementation are in speed and interface only (float32
outputs agree to ~2e-6): attention goes through ``scaled_dot_product_attention`` with the
gated relative-position bias as an additive mask, the bucket table is cached per length,
q/k/v are one matmul, the fbank runs on the whole batch (bitwise equal to the per-clip
call), the positional convolution runs channels-last (or through the FFT for narrow
models), and inference reuses its large buffers across layers. :meth:`BEATs.extract`
returns every requested hidden state as tokens (``B, T'*8, D``, time-major: token
``8 * t + f``) plus their time/frequency grid view.

Shapes: B batch, N samples (16 kHz), T fbank frames (``1 + (N - 400) // 160``),
T' time patches (``T // 16``), 8 frequency patches, D encoder dim.

Padding: :meth:`BEATs.extract` marks a time patch valid when all its 16 frames lie in
unpadded samples (exact, so a padded clip gives the same valid tokens as the clip alone);
:meth:`BEATs.extract_features` reproduces the official function including its coarser
token mask (blocks of ``T // (T'*8)`` frames per token).

Modules, by role (each imports only those above it; import the names from the package):

- `asdlib.encoder.preprocessing`: the fbank (`compute_fbank`, `FBANK_MEAN`, `FBANK_STD`)
  and the input geometry (frame and patch sizes, `MIN_SAMPLES`);
- `asdlib.encoder.config`: `BEATsConfig`, the named `CONFIGS`, `CheckpointError` and
  `ConfigError`;
- `asdlib.encoder.layers`: the transformer: `WeightNormConv1d` (positional convolution,
  float32 on the CPU), gated relative-position self-attention, `EncoderLayer`,
  `TransformerEncoder`;
- `asdlib.encoder.model`: `BEATs`, its outputs (`EncoderOutput`, `LayerTokens`,
  `tokens_to_grid`) and `EncoderInputError`;
- `asdlib.encoder.checkpoint`: `build_beats`, `load_beats`, `save_beats` and the checks of
  a checkpoint file.
"""

from asdlib.audio import SAMPLE_RATE
from asdlib.encoder.checkpoint import build_beats, load_beats, save_beats
from asdlib.encoder.config import CONFIGS, BEATsConfig, CheckpointError, ConfigError
from asdlib.encoder.layers import WeightNormConv1d
from asdlib.encoder.model import BEATs, EncoderInputError, EncoderOutput, tokens_to_grid
from asdlib.encoder.preprocessing import FBANK_MEAN, FBANK_STD, compute_fbank

__all__ = [
    "BEATs",
    "BEATsConfig",
    "CONFIGS",
    "CheckpointError",
    "ConfigError",
    "EncoderInputError",
    "EncoderOutput",
    "FBANK_MEAN",
    "FBANK_STD",
    "SAMPLE_RATE",
    "WeightNormConv1d",
    "build_beats",
    "compute_fbank",
    "load_beats",
    "save_beats",
    "tokens_to_grid",
]

