# The official DualCoOp / PositiveCoOp evaluation protocol, for direct
# comparison with the papers: validation on the TEST split every epoch, the
# best epoch on it kept and re-tested (model selection on the test split),
# VOC `difficult` = negative, CF1/OF1 at the fixed threshold 0.5 (and
# top-3). Interpreted by mmcoop.experiments.apply_protocol (tools/train.py,
# tools/test.py); see docs/experiments.md.
protocol = dict(name='official')
