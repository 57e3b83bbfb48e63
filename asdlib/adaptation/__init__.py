"""Task adaptation of the encoder (notebook 01_finetune), by role.

- `asdlib.adaptation.heads`: the inference heads (ASP, band-attentive pooling), ArcFace,
  and the heads file the feature store reads;
- `asdlib.adaptation.lora`: adaptation modes (full, last N layers, LoRA, frozen);
- `asdlib.adaptation.losses`: the loss as a list of small terms over one batch;
- `asdlib.adaptation.training`: `AdaptConfig` (recipes ``demo`` for the small CPU encoder,
  ``dcase`` for an official checkpoint on a GPU), proxy classes, the resumable loop `adapt`;
- `asdlib.adaptation.small_encoder`: the project's shipped small BEATs and the regularisers
  only it needs (random gain, zero-mean patch filters, spectrum geometry).

The package imports nothing itself: import the module you use.
"""
