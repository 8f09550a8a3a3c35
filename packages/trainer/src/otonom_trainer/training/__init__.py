"""The rooms of behaviour-cloning training (the loop itself is ``otonom_trainer.train``).

``losses`` (the loss maths), ``data`` (device, split, epoch order, split evaluation), ``optim``
(``FlatAdam``, the optimizer seam, ``PlateauLR``, the flat parameter buffer, the CPU thread
setting), ``checkpoint`` (``policy_best.pt``: save, read, load) and ``results``
(``EpochStats``, ``TrainingMetrics``, overfitting checks). Importing this package imports none
of them (and so not torch).
"""
