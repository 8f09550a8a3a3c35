"""The rooms of behaviour-cloning training (the loop itself is ``otonom_trainer.train``).

``losses`` (the loss maths, ``make_loss``, the finite-batch check), ``data`` (device, split,
epoch order, the split on the device and its evaluation), ``optim`` (``FlatAdam``, the
optimizer seam ``make_optimizer``, ``PlateauLR``, the flat parameter buffer, the CPU thread
setting), ``checkpoint`` (``policy_best.pt``: save, read, ``load_checkpoint``), ``files`` (the
dataset and checkpoint files found before torch is imported), ``state``
(``TrainState`` and its round trip through a checkpoint: resuming), ``outputs``
(``metadata.json``, ``history.csv``, plots, TensorBoard) and ``results`` (``EpochStats``,
``TrainingMetrics``, overfitting checks). Importing this package imports none of them (and so
not torch).
"""
