# NegativeCoOp (ablation in PositiveCoOp, WACV 2025) on a frozen CLIP RN101
# at 448 px: PositiveCoOp with the roles swapped. Absence: a learned CoOp
# prompt (16 class-specific context tokens) through the frozen text encoder
# plus a learned (C, 512) residual; presence: a learned (C, 512) embedding
# in feature space (official SamyakR99/PositiveCoOp models/negativecoop.py).
_base_ = ['./positivecoop_clip-rn101.py']

model = dict(head=dict(type='NegativeCoOpHead'))
