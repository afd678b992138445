# The clean protocol (default for new tables): a validation split held out
# from the training set (`val_fraction`, drawn with `seed`, saved as
# `split_file` -- the same file for every method of a table; None:
# <work_dirs>/splits/<dataset>_<split>_holdout<f>_seed<s>.json), model
# selection on it (`selection`: 'best' validation mAP or 'last' epoch), the
# test split evaluated once by tools/test.py on the selected checkpoint,
# per-class thresholds calibrated on the validation split (kept in the
# checkpoint). Interpreted by mmcoop.experiments.apply_protocol; see
# docs/experiments.md.
protocol = dict(
    name='clean', val_fraction=0.1, seed=0, split_file=None, selection='best')
