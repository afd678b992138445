# Zero-shot / generalised zero-shot multi-label recognition on MS-COCO 2014,
# the 48/17 split as the DualCoOp config next to it, with PositiveCoOp made
# class-agnostic (an mmcoop variant, not in the PositiveCoOp paper): one
# positive context shared by all classes (class_specific=False), no
# per-class residual (use_residual=False) and ONE (1, D) negative embedding
# for all classes (shared_embedding=True). No parameter belongs to a class,
# so a class never trained on is scored from its name. Trainable
# parameters: n_ctx*W + D = 16*512 + 512 = 8,704 (PositiveCoOpHead). Recipe
# otherwise as the PositiveCoOp paper configs (RN101, 448 px, 50 epochs).
_base_ = [
    '../_base_/models/positivecoop_clip-rn101.py',
    '../_base_/datasets/coco14_zero-shot-48-17_448.py',
    '../_base_/schedules/sgd-coslr-50e_positivecoop.py',
    '../_base_/default_runtime.py',
]

model = dict(
    head=dict(
        classnames='COCO2014MultiLabel',
        class_specific=False,
        use_residual=False,
        shared_embedding=True))
